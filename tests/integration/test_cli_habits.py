"""What people expect of a command line, through the real `jsrt` command: --version; a
mistyped command gets "did you mean"; an option a command does not take is reported by that
command; exit code 2 for usage errors and 1 for failures; no Python reprs; one time format;
lists that say when --limit cut them; `executions list --script NAME` across tenants;
`scripts delete` only with --yes."""

from __future__ import annotations

import json
import re
import uuid
from importlib.metadata import version

import asyncpg
from support.cli import run_cli
from support.factories import make_script, make_tenant

TIME = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b")
ANY_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


async def runs(conn: asyncpg.Connection, script: uuid.UUID, tenant: uuid.UUID, n: int) -> None:
    await conn.execute(
        """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type)
           SELECT $1, $2, 'completed', 'manual' FROM generate_series(1, $3)""", script, tenant, n)


def test_version(db_url: str) -> None:
    done = run_cli(db_url, "--version")
    assert (done.returncode, done.stdout) == (0, f"jsrt {version('jsruntime')}\n")


def test_a_mistyped_command_gets_did_you_mean_and_never_an_internal_name(db_url: str) -> None:
    for argv, message in [
        (("scripts", "lst"), "unknown command 'lst'; did you mean 'list'?"),
        (("scrpts",), "unknown command 'scrpts'; did you mean 'scripts'?"),
        (("dead-letters", "shw", "x"), "did you mean 'show'?"),
        (("scripts",), "the following arguments are required: COMMAND"),
    ]:
        done = run_cli(db_url, *argv)
        assert done.returncode == 2, argv
        assert message in done.stderr and "_command" not in done.stderr, done.stderr


async def test_options_and_exit_codes(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, name="job", status="draft")
    done = run_cli(db_url, "scripts", "activate", f"{tenant}/job", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": str(script), "status": "active"}
    done = run_cli(db_url, "scripts", "pause", f"{tenant}/job", "--bogus")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: jsrt scripts pause ")  # the command's own usage
    assert "unrecognized arguments: --bogus" in done.stderr

    # a bad UUID is a usage error everywhere; a failure is 1
    for argv in (("scripts", "list", "--tenant", "acme"), ("dead-letters", "list", "--tenant",
                 "acme"), ("executions", "show", "nope"), ("exec", "job", "--tenant", "acme"),
                 ("scripts", "show", "job"), ("run", "--http", "nope")):
        assert run_cli(db_url, *argv).returncode == 2, argv
    missing = run_cli(db_url, "executions", "show", str(uuid.uuid4()))
    assert (missing.returncode, missing.stderr.startswith("jsrt: error: no execution")) == (
        1, True)


async def test_text_output_has_no_python_reprs_and_one_time_format(
        conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn, "acme")
    script = await make_script(conn, tenant, name="job", type="scheduled", cron="0 9 * * *")
    await runs(conn, script, tenant, 1)
    await conn.execute("UPDATE scripts SET source = 'function handler() { return 2 }' "
                       "WHERE id = $1", script)
    outputs = {argv: run_cli(db_url, *argv).stdout for argv in [
        ("scripts", "show", str(script)), ("scripts", "versions", str(script)),
        ("scripts", "list"), ("executions", "list"), ("tenants", "list"),
        ("migrate", "status")]}
    show = outputs["scripts", "show", str(script)]
    assert re.search(r'^resource_limits +\{"max_api_calls_per_minute": 60, ', show, re.M)
    for argv, out in outputs.items():
        assert "{'" not in out and "True" not in out and "False" not in out, argv
        times = ANY_TIME.findall(out)  # every time there is, in whatever format
        assert times and len(TIME.findall(out)) == len(times), (argv, out)
    assert [ln.split()[1] for ln in outputs["scripts", "versions", str(script)]
            .splitlines()[1:]] == ["yes", "no"]


async def test_lists_say_when_limit_cut_them(conn: asyncpg.Connection, db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, name="job")
    await make_script(conn, tenant, name="other")
    await runs(conn, script, tenant, 3)
    await make_tenant(conn)
    for argv, rows in [(("executions", "list"), 3), (("scripts", "list"), 2),
                       (("tenants", "list"), 2)]:
        cut = run_cli(db_url, *argv, "--limit", str(rows - 1), "--json")
        assert len(json.loads(cut.stdout)) == rows - 1
        assert cut.stderr == (f"jsrt: showing the first {rows - 1}; more match (raise --limit "
                              "to see them)\n"), argv
        whole = run_cli(db_url, *argv, "--limit", str(rows))
        assert whole.returncode == 0 and whole.stderr == "", argv
    await conn.execute(
        """INSERT INTO script_event_dead_letters (script_id, tenant_id, event_type, event_data,
                                                  error)
           SELECT $1, $2, 'x', '{}', 'boom' FROM generate_series(1, 2)""", script, tenant)
    await conn.execute(
        """INSERT INTO jsrt_dead_letter_state (dead_letter_id, tenant_id)
           SELECT id, tenant_id FROM script_event_dead_letters""")
    cut = run_cli(db_url, "dead-letters", "list", "--limit", "1")
    assert len(cut.stdout.splitlines()) == 2 and "showing the first 1" in cut.stderr


async def test_executions_list_by_script_name_across_tenants(conn: asyncpg.Connection,
                                                             db_url: str) -> None:
    one, two = await make_tenant(conn), await make_tenant(conn)
    for tenant in (one, two):
        await runs(conn, await make_script(conn, tenant, name="job"), tenant, 1)
        await runs(conn, await make_script(conn, tenant, name="other"), tenant, 1)
    listed = json.loads(run_cli(db_url, "executions", "list", "--script", "job",
                                "--json").stdout)
    assert sorted(r["tenant_id"] for r in listed) == sorted([str(one), str(two)])
    assert {r["script_name"] for r in listed} == {"job"}
    only = json.loads(run_cli(db_url, "executions", "list", "--script", "job", "--tenant",
                              str(one), "--json").stdout)
    assert [r["tenant_id"] for r in only] == [str(one)]


async def test_scripts_delete_says_what_would_go_and_needs_yes(conn: asyncpg.Connection,
                                                               db_url: str) -> None:
    tenant = await make_tenant(conn)
    script = await make_script(conn, tenant, name="job")
    await runs(conn, script, tenant, 2)
    asked = run_cli(db_url, "scripts", "delete", f"{tenant}/job")
    assert asked.returncode == 2
    assert asked.stdout == (f"would delete script {script} ({tenant}/job) with 1 version(s), "
                            "2 execution(s) (0 unfinished) and 0 dead letter(s)\n")
    assert asked.stderr == "jsrt: error: nothing deleted: give --yes to delete\n"
    assert await conn.fetchval("SELECT count(*) FROM script_executions") == 2

    done = run_cli(db_url, "scripts", "delete", str(script), "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": str(script), "tenant_id": str(tenant), "name": "job", "deleted": True,
        "versions": 1, "executions": 2, "unfinished": 0, "dead_letters": 0}
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 0
    assert await conn.fetchval("SELECT count(*) FROM script_executions") == 0
