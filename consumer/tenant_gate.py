"""One tenant's share of something a process holds for all tenants (ctx.db's connections,
ctx.http.fetch's connections and name-lookup threads): at most `per_tenant` held by one tenant
at once; past it, that tenant waits for one of its own, never anybody else's."""

from __future__ import annotations

import asyncio


class TenantGate:
    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._held: dict[str, int] = {}
        self._freed: dict[str, asyncio.Event] = {}

    async def enter(self, tenant_id: str, timeout_s: float | None = None) -> bool:
        """True once the tenant is under its cap (and counted in); False after `timeout_s`
        (None: as long as it takes, or until cancelled; nothing is counted then)."""
        try:
            async with asyncio.timeout(None if timeout_s is None else max(timeout_s, 0.0)):
                while self._held.get(tenant_id, 0) >= self.per_tenant:
                    freed = self._freed.setdefault(tenant_id, asyncio.Event())
                    await freed.wait()
        except TimeoutError:
            return False
        self._held[tenant_id] = self._held.get(tenant_id, 0) + 1
        return True

    def leave(self, tenant_id: str) -> None:
        n = self._held.get(tenant_id, 0) - 1
        if n > 0:
            self._held[tenant_id] = n
        else:
            self._held.pop(tenant_id, None)
        freed = self._freed.pop(tenant_id, None)
        if freed is not None:  # every waiter looks again; one gets the place
            freed.set()

    def waiting(self, tenant_id: str) -> bool:
        """Whether an `enter` of this tenant waits for one of its places now."""
        return tenant_id in self._freed
