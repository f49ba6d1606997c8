"""One frozen settings object, read from the environment once and validated at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from consumer.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
# schema/ and triggers.sql: a wheel carries them in consumer/_bundle/ (setup.py copies them there
# at build time); a checkout or an editable install has no such directory and reads the
# repository's own, so the repository keeps a single copy.
_BUNDLE = Path(__file__).resolve().parent / "_bundle"
SQL_ROOT = _BUNDLE if _BUNDLE.is_dir() else REPO_ROOT


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = ""
    # How many executions one daemon runs at once (over all scripts): the slots it may hold.
    concurrency: int = 64
    # The most of those slots one tenant's scripts may hold (0: a quarter of `concurrency`): a
    # run that waits on a timer or a host call holds its slot as long as it lasts, and one
    # tenant's sleeping runs took every slot of a daemon while another tenant's event waited.
    tenant_concurrency: int = 0
    # Runs queued in the daemon for each slot it holds (refilled when half empty), and how
    # long it keeps refilling one script's lease before giving its slots back to the round.
    reserve: int = 16
    lease_period: float = 2.0
    # How long a lease whose queue ran dry keeps one slot for the script's next event (slots.py).
    lease_linger: float = 0.5
    # Sandbox worker processes; 0 means one per core.
    workers: int = 0
    # Extra sandbox workers started while every worker runs a long step (a CPU-heavy tenant
    # within its limits), for the other tenants' runs; -1: as many as `workers`, 0: none.
    burst_workers: int = -1
    poll_interval: float = 1.0  # seconds; NOTIFY is only a hint, this is the fallback
    claim_batch: int = 512  # events fanned out per claim
    tenant_batch: int = 128  # at most this many events of one tenant per claim (fairness)
    grace_period: float = 30.0  # seconds running executions get on SIGTERM
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 15.0  # a daemon silent this long is presumed dead
    channels: tuple[str, ...] = ()  # extra LISTEN channels accepting raw events
    log_format: str = "json"  # json | console
    log_level: str = "info"
    retry_base_seconds: float = 30.0
    # Retention (`jsrt cleanup`, and the daemon every cleanup_interval seconds; 0 = never):
    # finished executions, exhausted dead letters, dispatched events, cron firings.
    retention_executions_days: float = 90.0
    retention_dead_letters_days: float = 30.0
    retention_events_days: float = 7.0
    retention_cron_firings_days: float = 7.0
    cleanup_interval: float = 3600.0
    cleanup_batch: int = 1000  # rows per DELETE statement (each its own short transaction)
    # VACUUM of the run queue's hot tables (vacuum.py), seconds apart; 0 = autovacuum's alone
    queue_vacuum_interval: float = 5.0
    schema_dir: Path = SQL_ROOT / "schema"
    triggers_file: Path = SQL_ROOT / "triggers.sql"
    fetch_allowlist: tuple[str, ...] = ()
    http_max_body_bytes: int = 1 << 20  # larger HTTP request bodies get 413
    # Request bodies one process holds at once for one tenant's endpoints, and for all: a
    # request whose body would pass either gets 503 (each 1 MiB request in flight costs the
    # server several MiB: 128 connections of 1 MiB bodies held it at 612 MB)
    http_tenant_body_bytes: int = 16 << 20
    http_body_bytes: int = 64 << 20
    # /metrics, /healthz and /readyz of `jsrt run` (HOST:PORT; empty = off; port 0 = any free)
    metrics_addr: str = "127.0.0.1:9464"
    # Whether metrics_addr was chosen (JSRT_METRICS_ADDR, or by the caller): a chosen address
    # that is taken is an error; the default one, taken by another daemon on the same host,
    # gives way to a free port, so that several daemons can run side by side.
    metrics_addr_given: bool = False
    metrics_interval: float = 15.0  # seconds between queue-depth / dead-letter queries
    # ctx.cache: Redis at this URL (redis://host:port/db); empty: the jsrt_cache table
    cache_url: str = ""
    cache_max_entries: int = 10_000  # live ctx.cache entries per tenant
    # ctx.db: its own connections, apart from the daemon's (a tenant's open transactions never
    # hold up claims and results), and at most this many of them held by one tenant at once.
    data_pool_size: int = 8
    data_tenant_connections: int = 4
    # Access (#15). Fernet keys for tenant secrets, comma-separated: the first encrypts, all
    # decrypt (rotation: `jsrt secrets rotate`). Empty: scripts cannot read secrets.
    secrets_key: tuple[str, ...] = field(default=(), repr=False)
    # The server-side pepper of API-key hashes (HMAC-SHA256(pepper, secret)); changing it
    # invalidates every key.
    key_pepper: str = field(default="", repr=False)
    # JWT endpoints without metadata.auth_secret verify RS256/ES256 tokens with this PEM
    # public key, or with the keys of this JWKS file (matched by `kid`).
    jwt_public_key_file: str = ""
    jwt_jwks_file: str = ""
    hmac_tolerance_s: float = 300.0  # how old an HMAC-signed request's timestamp may be
    # The web console (#18, /console): a session lasts at most this many hours after sign-in,
    # and ends after this many idle minutes; failed sign-ins per client address per minute.
    console_session_hours: float = 12.0
    console_idle_minutes: float = 60.0
    console_signin_per_minute: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if "DATABASE_URL" in env:
            values["database_url"] = env["DATABASE_URL"]
        for f in fields(cls):
            key = "JSRT_" + f.name.upper()
            if key in env and f.name not in _NOT_FROM_ENV:
                values[f.name] = _parse(f.name, env[key], getattr(cls(), f.name))
        values["metrics_addr_given"] = "metrics_addr" in values or "metrics_addr" in overrides
        return replace(cls(), **{**values, **overrides}).validated()

    def validated(self) -> Settings:
        problems = [msg for ok, msg in self._checks() if not ok]
        if problems:
            raise ConfigError("\n".join(f"invalid settings: {p}" for p in problems))
        return self

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.concurrency >= 1, f"JSRT_CONCURRENCY must be >= 1 (got {self.concurrency})"),
            (self.tenant_concurrency >= 0,
             f"JSRT_TENANT_CONCURRENCY must be >= 0 (got {self.tenant_concurrency})"),
            (self.workers >= 0, f"JSRT_WORKERS must be >= 0 (got {self.workers})"),
            (self.burst_workers >= -1,
             f"JSRT_BURST_WORKERS must be >= -1 (got {self.burst_workers})"),
            (self.poll_interval > 0, "JSRT_POLL_INTERVAL must be > 0"),
            (self.claim_batch >= 1, "JSRT_CLAIM_BATCH must be >= 1"),
            (self.reserve >= 1, "JSRT_RESERVE must be >= 1"),
            (self.lease_period > 0, "JSRT_LEASE_PERIOD must be > 0"),
            (self.lease_linger >= 0, "JSRT_LEASE_LINGER must be >= 0"),
            (self.tenant_batch >= 1, "JSRT_TENANT_BATCH must be >= 1"),
            (self.grace_period >= 0, "JSRT_GRACE_PERIOD must be >= 0"),
            (
                0 < self.heartbeat_interval < self.heartbeat_timeout,
                "JSRT_HEARTBEAT_INTERVAL must be > 0 and < JSRT_HEARTBEAT_TIMEOUT",
            ),
            (self.log_format in ("json", "console"), "JSRT_LOG_FORMAT must be json or console"),
            (
                self.log_level in ("debug", "info", "warning", "error"),
                "JSRT_LOG_LEVEL must be debug, info, warning or error",
            ),
            (self.retry_base_seconds > 0, "JSRT_RETRY_BASE_SECONDS must be > 0"),
            (self.http_max_body_bytes >= 1, "JSRT_HTTP_MAX_BODY_BYTES must be >= 1"),
            (
                self.http_body_bytes >= self.http_tenant_body_bytes >= self.http_max_body_bytes,
                "JSRT_HTTP_BODY_BYTES >= JSRT_HTTP_TENANT_BODY_BYTES >= JSRT_HTTP_MAX_BODY_BYTES"
                " is needed",
            ),
            (
                min(self.retention_executions_days, self.retention_dead_letters_days,
                    self.retention_events_days, self.retention_cron_firings_days) > 0,
                "JSRT_RETENTION_*_DAYS must be > 0",
            ),
            (self.cleanup_interval >= 0, "JSRT_CLEANUP_INTERVAL must be >= 0 (0 disables)"),
            (self.queue_vacuum_interval >= 0,
             "JSRT_QUEUE_VACUUM_INTERVAL must be >= 0 (0 disables)"),
            (self.cleanup_batch >= 1, "JSRT_CLEANUP_BATCH must be >= 1"),
            (not self.metrics_addr or _is_bind(self.metrics_addr),
             f"JSRT_METRICS_ADDR must be HOST:PORT or empty (got {self.metrics_addr!r})"),
            (self.metrics_interval > 0, "JSRT_METRICS_INTERVAL must be > 0"),
            (not self.cache_url or self.cache_url.startswith(("redis://", "rediss://", "unix://")),
             "JSRT_CACHE_URL must be a redis://, rediss:// or unix:// URL (or empty)"),
            (self.cache_max_entries >= 1, "JSRT_CACHE_MAX_ENTRIES must be >= 1"),
            (self.data_pool_size >= 1, "JSRT_DATA_POOL_SIZE must be >= 1"),
            (self.data_tenant_connections >= 1, "JSRT_DATA_TENANT_CONNECTIONS must be >= 1"),
            (self.hmac_tolerance_s > 0, "JSRT_HMAC_TOLERANCE_S must be > 0"),
            (self.console_session_hours > 0 and self.console_idle_minutes > 0,
             "JSRT_CONSOLE_SESSION_HOURS and JSRT_CONSOLE_IDLE_MINUTES must be > 0"),
            (self.console_signin_per_minute >= 1, "JSRT_CONSOLE_SIGNIN_PER_MINUTE must be >= 1"),
            (_fernet_keys(self.secrets_key),
             "JSRT_SECRETS_KEY must be Fernet keys (32 url-safe base64-encoded bytes each, "
             "comma-separated; `jsrt secrets keygen` makes one)"),
        ]

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def tenant_slot_count(self) -> int:
        return self.tenant_concurrency or max(1, self.concurrency // 4)

    @property
    def burst_worker_count(self) -> int:
        return self.worker_count if self.burst_workers < 0 else self.burst_workers

    def require_database(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1/jsrt)")
        return self.database_url


_NOT_FROM_ENV = frozenset({"metrics_addr_given"})  # derived, never set by a variable


def _fernet_keys(keys: tuple[str, ...]) -> bool:
    from cryptography.fernet import Fernet

    try:
        for k in keys:
            Fernet(k.encode())
    except (ValueError, TypeError):
        return False
    return True


def _is_bind(addr: str) -> bool:
    _, sep, port = addr.rpartition(":")
    return bool(sep) and port.isdigit() and int(port) <= 65535


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if isinstance(default, Path):
            return Path(raw)
    except ValueError:
        kind = type(default).__name__
        raise ConfigError(f"JSRT_{name.upper()}={raw!r} is not a valid {kind}") from None
    return raw.strip().lower() if name in ("log_format", "log_level") else raw
