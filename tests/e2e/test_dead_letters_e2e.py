"""A daemon SIGKILLed in the middle of a dead-letter retry loses nothing: the retry it was
running is rescued by the next daemon as "worker lost", counted as a failed attempt, and the
letter keeps going until it is resolved. Real `jsrt run` subprocesses, real V8."""

from __future__ import annotations

import signal

import asyncpg
from support.daemons import daemon_process
from support.factories import make_script, make_tenant, publish
from support.waiting import row_becomes

# Attempt 1 fails, attempt 2 (the first retry) runs long enough to be killed, attempt 3 works.
SCRIPT = """function handler(input, ctx) {
    const attempt = ctx.trigger.attempt;
    if (attempt === 1) throw new Error('first attempt fails');
    if (attempt === 2) { const until = Date.now() + 20000; while (Date.now() < until) {} }
    return {attempt: attempt, n: input.n};
}"""




async def test_a_daemon_killed_during_a_retry_loses_nothing(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant, SCRIPT)
    env = {"JSRT_RETRY_BASE_SECONDS": "0.2"}
    with daemon_process(db_url, env=env) as first:
        first.wait_event("daemon_started")
        await publish(conn, tenant, "thing.happened", {"n": 1})
        await row_becomes(conn, """SELECT count(*) FROM script_executions WHERE tenant_id = $1
                                  AND trigger_data ? 'dead_letter_id' AND status = 'running'""",
                         tenant, expect=1)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)

    letter = await conn.fetchrow(
        """SELECT d.id, d.retry_count, st.in_flight, st.resolution FROM script_event_dead_letters d
           JOIN jsrt_dead_letter_state st ON st.dead_letter_id = d.id WHERE d.tenant_id = $1""",
        tenant)
    assert (letter["retry_count"], letter["in_flight"], letter["resolution"]) == (0, True, None)

    with daemon_process(db_url, env=env) as second:
        second.wait_event("daemon_started")
        second.wait_event("execution_worker_lost", tenant_id=str(tenant))
        await row_becomes(conn, "SELECT resolution FROM jsrt_dead_letter_state "
                         "WHERE dead_letter_id = $1", letter["id"], expect="succeeded")
        assert second.stop() == 0

    rows = await conn.fetch(
        """SELECT (trigger_data->>'attempt')::int AS attempt, status, error,
                  trigger_data->>'dead_letter_id' AS letter
           FROM script_executions WHERE tenant_id = $1 ORDER BY 1""", tenant)
    assert [(r["attempt"], r["status"]) for r in rows] == [
        (1, "failed"), (2, "failed"), (3, "completed")]
    assert "first attempt fails" in rows[0]["error"]
    assert rows[1]["error"] == "worker lost"
    assert [r["letter"] for r in rows] == [None, str(letter["id"]), str(letter["id"])]
    final = await conn.fetchrow(
        "SELECT retry_count, error FROM script_event_dead_letters WHERE id = $1", letter["id"])
    assert (final["retry_count"], final["error"]) == (1, "worker lost")
    assert await conn.fetchval("SELECT count(*) FROM jsrt_runs") == 0
