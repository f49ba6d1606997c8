import uuid
from datetime import UTC, datetime

from consumer.scheduler import DueJob, decide


def job(expr: str = "0 * * * *", tz: str = "UTC", next_run_at: datetime | None = None,
        running: bool = False) -> DueJob:
    return DueJob(uuid.uuid4(), uuid.uuid4(), expr, tz, next_run_at, running)


NOW = datetime(2026, 6, 1, 14, 0, 30, tzinfo=UTC)


def test_an_unplanned_job_is_planned_without_firing() -> None:
    d = decide(job(next_run_at=None), NOW)
    assert d.action == "replan"
    assert d.next_run_at == datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


def test_a_due_job_fires_its_tick_and_plans_the_next() -> None:
    d = decide(job(next_run_at=datetime(2026, 6, 1, 14, 0, tzinfo=UTC)), NOW)
    assert d.action == "fire"
    assert d.scheduled_for == datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
    assert d.missed == 0
    assert d.next_run_at == datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


def test_three_hours_down_gives_one_catch_up_run() -> None:
    d = decide(job(next_run_at=datetime(2026, 6, 1, 11, 0, tzinfo=UTC)), NOW)
    assert d.action == "fire"
    assert d.scheduled_for == datetime(2026, 6, 1, 14, 0, tzinfo=UTC)
    assert d.missed == 3
    assert d.next_run_at == datetime(2026, 6, 1, 15, 0, tzinfo=UTC)


def test_a_tick_during_a_running_run_is_skipped() -> None:
    d = decide(job(next_run_at=datetime(2026, 6, 1, 14, 0, tzinfo=UTC), running=True), NOW)
    assert d.action == "skip"
    assert d.next_run_at == datetime(2026, 6, 1, 15, 0, tzinfo=UTC)
    assert d.reason == "previous run still going"


def test_invalid_cron_or_timezone_parks_the_job_with_a_reason() -> None:
    bad_cron = decide(job("61 * * * *", next_run_at=NOW), NOW)
    assert bad_cron.action == "invalid"
    assert bad_cron.reason and "61 * * * *" in bad_cron.reason
    bad_tz = decide(job(tz="Mars/Olympus", next_run_at=None), NOW)
    assert bad_tz.action == "invalid"
    assert bad_tz.reason and "Mars/Olympus" in bad_tz.reason


def test_infinity_rows_from_the_driver_are_understood() -> None:
    row = {"script_id": uuid.uuid4(), "tenant_id": uuid.uuid4(), "cron_expression": "* * * * *",
           "timezone": None, "next_run_at": datetime(1, 1, 1), "is_running": False}
    j = DueJob.from_row(row)
    assert j.next_run_at is None
    assert j.timezone == "UTC"
