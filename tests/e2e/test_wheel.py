"""What a user installs: the sdist and the wheel built from it (as `python -m build` does), the
wheel installed into a fresh venv outside the repository with its dependencies from the package
index, as pip installs them. That venv's `jsrt` migrates a fresh database from the copy of
schema/ and triggers.sql inside the wheel, and runs one event."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import asyncpg
import pytest
from support.factories import executions, make_script, make_tenant

from consumer.migrate import load
from consumer.settings import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MIGRATIONS = [m.id for m in load(REPO_ROOT / "schema")]


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus everything that could point the installed jsrt at the repository."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("JSRT_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel from the unpacked sdist: the wheel proves the sdist complete
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO_ROOT)], cwd=out,
        env=clean_env())
    (sdist,), (wheel,) = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    return Dist(sdist, wheel)


def test_the_sdist_carries_schema_and_triggers(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as tar:
        top = tar.getnames()[0].split("/", 1)[0]
        names = {n.removeprefix(top + "/") for n in tar.getnames()}
    assert {f"schema/{m}" for m in MIGRATIONS} <= names
    assert {"triggers.sql", "setup.py", "MANIFEST.in"} <= names


def test_the_wheel_carries_them_inside_the_package_and_nothing_at_the_top(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
        triggers = whl.read("consumer/_bundle/triggers.sql")
    assert triggers == (REPO_ROOT / "triggers.sql").read_bytes()
    assert {f"consumer/_bundle/schema/{m}" for m in MIGRATIONS} <= names
    # only the package and its metadata: no stray top-level schema/ or triggers.sql
    dist_info = f"jsruntime-{version('jsruntime')}.dist-info"
    assert {n.split("/", 1)[0] for n in names} == {"consumer", dist_info}


async def test_the_installed_wheel_migrates_a_fresh_database_and_runs_an_event(
        dist: Dist, empty_db_url: str, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(dist.wheel)],
        cwd=tmp_path, env=clean_env())
    env = clean_env(DATABASE_URL=empty_db_url, JSRT_WORKERS="1", JSRT_METRICS_ADDR="")
    jsrt = str(venv / "bin" / "jsrt")

    where = run([str(venv / "bin" / "python"), "-c",
                 "import consumer.settings as s; print(s.Settings().schema_dir)"],
                cwd=tmp_path, env=env).strip()
    assert Path(where).is_relative_to(venv), where  # the wheel's copy, not the repository's

    migrated = run([jsrt, "migrate", "up"], cwd=tmp_path, env=env)
    assert migrated.startswith(f"applied {len(MIGRATIONS)} migration(s)"), migrated

    conn = await asyncpg.connect(empty_db_url)
    try:
        tenant = await make_tenant(conn)
        script = await make_script(conn, tenant)
        run([jsrt, "publish", str(tenant), "thing.happened", '{"n": 1}'], cwd=tmp_path, env=env)
        run([jsrt, "run", "--until-idle"], cwd=tmp_path, env=env)
        [execution] = await executions(conn, tenant)
    finally:
        await conn.close()
    assert (execution["script_id"], execution["status"]) == (script, "completed"), execution
    assert execution["output"] == {"echo": {"n": 1}, "tenant": str(tenant)}


def test_the_wheel_carries_the_consoles_templates_and_static_files(dist: Dist) -> None:
    """Templates, styles and scripts of the web console; its npm files too when they were
    built before the wheel (make, the Dockerfile): the runtime serves them itself."""
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
    console = REPO_ROOT / "consumer" / "console"
    expected = {f"consumer/console/{p.relative_to(console)}"
                for folder in ("templates", "static") for p in (console / folder).rglob("*")
                if p.is_file() and not p.name.startswith(".")}
    assert "consumer/console/templates/base.html" in expected
    assert expected <= names, sorted(expected - names)
