import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import InvalidEvent
from consumer.events import decode, depth, is_wakeup, parse_raw, truncate, wakeup_tenant

TENANT = str(uuid.uuid4())


def test_a_valid_raw_event_parses() -> None:
    ev = parse_raw(decode(json.dumps(
        {"tenant_id": TENANT, "event_type": "user.created", "payload": {"a": [1]}, "id": "k1"})))
    assert str(ev.tenant_id) == TENANT
    assert ev.event_type == "user.created"
    assert ev.payload == {"a": [1]}
    assert ev.dedup_key == '"k1"'


def test_payload_defaults_to_empty_object_and_integer_ids_are_keys() -> None:
    ev = parse_raw({"tenant_id": TENANT, "event_type": "x", "id": 42})
    assert ev.payload == {}
    assert ev.dedup_key == "42"


def test_an_integer_id_and_the_same_digits_as_a_string_are_two_keys() -> None:
    as_int = parse_raw({"tenant_id": TENANT, "event_type": "x", "id": 1})
    as_str = parse_raw({"tenant_id": TENANT, "event_type": "x", "id": "1"})
    assert as_int.dedup_key != as_str.dedup_key


def test_an_event_with_a_queued_key_is_an_event_not_a_wakeup() -> None:
    message = {"tenant_id": TENANT, "event_type": "job.state", "queued": True, "payload": {}}
    assert not is_wakeup(message)
    assert parse_raw(message).event_type == "job.state"


def test_jsrt_publish_wakeups_are_recognised() -> None:
    assert is_wakeup({"queued": True, "tenant_id": TENANT})
    assert not is_wakeup({"queued": True, "tenant_id": TENANT, "event_type": "x"})
    assert not is_wakeup({"tenant_id": TENANT, "event_type": "x"})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{nope", "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('"a string"', "expected a JSON object, got str"),
        (json.dumps({"event_type": "x"}), "tenant_id is missing"),
        (json.dumps({"tenant_id": 5, "event_type": "x"}), "tenant_id is missing or not a string"),
        (json.dumps({"tenant_id": "abc", "event_type": "x"}), "is not a UUID"),
        (json.dumps({"tenant_id": TENANT}), "event_type must be a non-empty string"),
        (json.dumps({"tenant_id": TENANT, "event_type": ""}), "non-empty"),
        (json.dumps({"tenant_id": TENANT, "event_type": "   "}), "non-empty"),
        (json.dumps({"tenant_id": TENANT, "event_type": ["x"]}), "non-empty"),
        (json.dumps({"tenant_id": TENANT, "event_type": "x" * 256}), "longer than 255"),
        (json.dumps({"tenant_id": TENANT, "event_type": "x", "id": {"a": 1}}), "id must be"),
        (json.dumps({"tenant_id": TENANT, "event_type": "x", "id": ""}), "id must be 1..255"),
        (json.dumps({"tenant_id": TENANT, "event_type": "x", "payload": [[[[]]]] }), None),
        ('{"tenant_id": "' + TENANT + '", "event_type": "x", "payload": ' + "[" * 70 + "]" * 70
         + "}", "nested deeper than 64"),
        ("[" * 5000 + "]" * 5000, "nested deeper than 64"),
    ],
)
def test_malformed_events_are_rejected_with_one_readable_line(
    text: str, reason: str | None
) -> None:
    if reason is None:
        parse_raw(decode(text))
        return
    with pytest.raises(InvalidEvent) as info:
        parse_raw(decode(text))
    message = str(info.value)
    assert reason in message
    assert "\n" not in message


def test_depth_counts_nesting_without_recursion() -> None:
    value: object = 1
    for _ in range(10_000):
        value = [value]
    assert depth(value) == 10_000
    assert depth({"a": {"b": 1}}) == 2
    assert depth(3) == 0


def test_truncate_marks_what_it_cut() -> None:
    assert truncate("abc", 10) == "abc"
    assert truncate("x" * 300, 200).endswith("…(+100 chars)")


def test_a_wakeup_names_its_tenant_and_nothing_else_does() -> None:
    # jsrt_publish's own text (json_build_object: a space after each colon and comma)
    assert wakeup_tenant(f'{{"queued" : true, "tenant_id" : "{TENANT}"}}') == uuid.UUID(TENANT)
    assert wakeup_tenant(json.dumps({"queued": True, "tenant_id": TENANT})) == uuid.UUID(TENANT)
    for other in ('{"queued": true}', '{"queued": true, "tenant_id": "nope"}',
                  '{"queued": true, "tenant_id": 7}', f'{{"tenant_id": "{TENANT}"}}',
                  json.dumps({"tenant_id": TENANT, "event_type": "x", "queued": True}),
                  '{"queued": true, "tenant_id": ["' + TENANT + '"]}', "not json", ""):
        assert wakeup_tenant(other) is None


@given(st.text(max_size=300))
def test_any_notification_text_gives_a_tenant_or_none_never_an_error(text: str) -> None:
    got = wakeup_tenant(text)
    assert got is None or isinstance(got, uuid.UUID)
