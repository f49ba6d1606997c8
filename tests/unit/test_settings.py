from pathlib import Path

import pytest

from consumer.errors import ConfigError
from consumer.settings import REPO_ROOT, Settings


def test_defaults_and_environment() -> None:
    s = Settings.from_env(env={"DATABASE_URL": "postgresql://x/y", "JSRT_CONCURRENCY": "8",
                               "JSRT_CHANNELS": "a, b", "JSRT_LOG_FORMAT": "CONSOLE",
                               "JSRT_POLL_INTERVAL": "0.5"})
    assert s.database_url == "postgresql://x/y"
    assert s.concurrency == 8
    assert s.channels == ("a", "b")
    assert s.log_format == "console"
    assert s.poll_interval == 0.5
    assert Settings.from_env(env={}).retry_base_seconds == 30.0


def test_a_checkout_migrates_from_the_repository_unless_told_otherwise() -> None:
    # an installed wheel reads its own copy instead: tests/e2e/test_wheel.py
    s = Settings.from_env(env={})
    assert (s.schema_dir, s.triggers_file) == (REPO_ROOT / "schema", REPO_ROOT / "triggers.sql")
    s = Settings.from_env(env={"JSRT_SCHEMA_DIR": "/srv/schema",
                               "JSRT_TRIGGERS_FILE": "/srv/triggers.sql"})
    assert (s.schema_dir, s.triggers_file) == (Path("/srv/schema"), Path("/srv/triggers.sql"))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JSRT_CONCURRENCY": "many"}, "JSRT_CONCURRENCY='many' is not a valid int"),
        ({"JSRT_CONCURRENCY": "0"}, "JSRT_CONCURRENCY must be >= 1"),
        ({"JSRT_LOG_FORMAT": "xml"}, "JSRT_LOG_FORMAT must be json or console"),
        ({"JSRT_HEARTBEAT_INTERVAL": "20"}, "JSRT_HEARTBEAT_INTERVAL must be > 0 and <"),
        ({"JSRT_POLL_INTERVAL": "-1"}, "JSRT_POLL_INTERVAL must be > 0"),
        ({"JSRT_QUEUE_VACUUM_INTERVAL": "-1"}, "JSRT_QUEUE_VACUUM_INTERVAL must be >= 0"),
        ({"JSRT_BURST_WORKERS": "-2"}, "JSRT_BURST_WORKERS must be >= -1"),
        ({"JSRT_TENANT_CONCURRENCY": "-1"}, "JSRT_TENANT_CONCURRENCY must be >= 0"),
    ],
)
def test_invalid_settings_fail_at_start_with_a_clear_message(env: dict[str, str],
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid settings|is not a valid") as info:
        Settings.from_env(env=env)
    assert message in str(info.value)


def test_a_missing_database_url_is_explained() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        Settings.from_env(env={}).require_database()


def test_burst_workers_are_as_many_as_the_workers_unless_told() -> None:
    assert Settings.from_env(env={"JSRT_WORKERS": "3"}).burst_worker_count == 3
    assert Settings.from_env(env={"JSRT_WORKERS": "3", "JSRT_BURST_WORKERS": "0"}
                             ).burst_worker_count == 0
    assert Settings.from_env(env={"JSRT_BURST_WORKERS": "5"}).burst_worker_count == 5


def test_a_tenant_holds_a_quarter_of_the_slots_unless_told() -> None:
    assert Settings.from_env(env={}).tenant_slot_count == 16
    assert Settings.from_env(env={"JSRT_CONCURRENCY": "2"}).tenant_slot_count == 1
    assert Settings.from_env(env={"JSRT_TENANT_CONCURRENCY": "64"}).tenant_slot_count == 64
