"""Cron in the real `jsrt run` daemon (subprocess, real PostgreSQL, real V8, real time):
scheduled scripts are planned, fired and re-planned without a restart."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from support.daemons import daemon_process
from support.factories import make_script, make_tenant
from support.waiting import row_becomes

FINITE_PLAN = """SELECT next_run_at > now() AND next_run_at < 'infinity'
                 FROM script_scheduled_jobs WHERE script_id = $1"""




async def test_a_scheduled_script_is_planned_fired_and_replanned_by_the_running_daemon(
    conn: asyncpg.Connection, db_url: str
) -> None:
    tenant = await make_tenant(conn)
    with daemon_process(db_url, env={"JSRT_POLL_INTERVAL": "0.1"}) as d:
        d.wait_event("daemon_started")
        # created while the daemon runs: planned without a restart, and not fired at once
        script = await make_script(conn, tenant, type="scheduled", cron="* * * * *")
        await row_becomes(conn, FINITE_PLAN, script)
        assert await conn.fetchval(
            "SELECT count(*) FROM script_executions WHERE script_id = $1", script) == 0

        # no waiting for a real minute: pull the planned tick back to this minute's start
        tick = await conn.fetchval(
            "UPDATE script_scheduled_jobs SET next_run_at = date_trunc('minute', now()) "
            "WHERE script_id = $1 RETURNING next_run_at", script)
        fired = d.wait_event("cron_fired", script_id=str(script))
        # the tick pulled back, or - if a minute boundary passed meanwhile - the next one with
        # the pulled-back tick folded into it
        ticks = {tick.isoformat(): 0, (tick + timedelta(minutes=1)).isoformat(): 1}
        assert ticks[fired["scheduled_for"]] == fired["missed_ticks"]
        done = d.wait_event("execution_completed", script_id=str(script))
        assert (done["trigger"], done["status"]) == ("cron", "completed")
        await row_becomes(
            conn, "SELECT last_run_status FROM script_scheduled_jobs WHERE script_id = $1",
            script, expect="completed")

        row = await conn.fetchrow(
            "SELECT e.status, e.trigger_type, e.input->>'scheduled_for' AS at, e.started_at, "
            "       j.is_running, j.last_run_at, j.next_run_at "
            "FROM script_executions e JOIN script_scheduled_jobs j USING (script_id) "
            "WHERE e.script_id = $1", script)
        assert (row["status"], row["trigger_type"], row["is_running"]) == (
            "completed", "cron", False)
        assert row["at"] == fired["scheduled_for"]
        assert row["last_run_at"] >= row["started_at"]
        assert row["next_run_at"] > tick

        # a changed schedule is re-planned by the running daemon
        await conn.execute("UPDATE scripts SET cron_expression = '0 0 1 1 *' WHERE id = $1",
                           script)
        await row_becomes(
            conn, "SELECT extract(doy FROM next_run_at AT TIME ZONE 'UTC') = 1 AND "
                  "next_run_at > now() FROM script_scheduled_jobs WHERE script_id = $1", script)

        # a deleted script's job goes with it, and the daemon runs on
        await conn.execute("DELETE FROM scripts WHERE id = $1", script)
        assert await conn.fetchval(
            "SELECT count(*) FROM script_scheduled_jobs WHERE script_id = $1", script) == 0
        assert d.stop() == 0
    assert d.count("cron_fired") == 1
    assert d.count("cron_job_invalid") == 0
