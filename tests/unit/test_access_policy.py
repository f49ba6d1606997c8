"""Access policies read from metadata, the HMAC scheme and secret masking: pure functions."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

from consumer.access import parse_signature, sign
from consumer.errors import ValidationError
from consumer.keys import Caller, check_scopes, new_key_text, parse_key
from consumer.policy import Cors, Policy, parse_policy, problems
from consumer.sandbox import redact
from consumer.sandbox.types import ExecutionResult


def test_the_default_policy_is_key() -> None:
    assert parse_policy(None) == parse_policy({}) == Policy(auth="key")
    assert parse_policy({"timezone": "UTC", "change_description": "x"}).auth == "key"


def test_a_full_policy() -> None:
    p = parse_policy({"auth": "jwt", "auth_secret": "JWT_KEY", "jwt_audience": "a",
                      "rate_limit_per_minute": 10,
                      "cors": {"origins": ["https://x.example"], "methods": ["get"]}})
    assert p == Policy("jwt", "JWT_KEY", "a", None, 10,
                       Cors(("https://x.example",), ("GET",), (), 600))


@pytest.mark.parametrize(("metadata", "problem"), [
    ({"auth": "none"}, "metadata.auth must be one of key, hmac, jwt, public (got 'none')"),
    ({"auth": "hmac"}, "metadata.auth 'hmac' needs metadata.auth_secret (the signing secret)"),
    ({"auth_secret": "has space"}, "metadata.auth_secret must name a secret (got 'has space')"),
    ({"rate_limit_per_minute": True}, "metadata.rate_limit_per_minute must be an integer"),
    ({"rate_limit_per_minute": 2_000_000}, "metadata.rate_limit_per_minute must be an integer"),
    ({"cors": []}, "metadata.cors must be an object of origins, methods, headers, max_age"),
    ({"cors": {"origins": "x"}}, "metadata.cors.origins must be a list of strings"),
    ({"cors": {"origins": ["o"], "methods": ["BREW"]}}, "metadata.cors.methods: unknown method"),
    ({"cors": {"origins": ["o"], "max_age": -1}}, "metadata.cors.max_age must be an integer"),
    ({"jwt_audience": 5}, "metadata.jwt_audience must be a string"),
])
def test_bad_policies_say_why(metadata: dict[str, object], problem: str) -> None:
    [found] = problems(metadata)
    assert found.startswith(problem)


def test_cors_origins() -> None:
    c = parse_policy({"cors": {"origins": "*"}}).cors
    assert c is not None and c.allows("https://any") and c.allow_origin("https://any") == "*"
    c = parse_policy({"cors": {"origins": ["https://a"]}}).cors
    assert c is not None and c.allows("https://a") and not c.allows("https://b")
    assert c.allow_origin("https://a") == "https://a"


def test_the_hmac_scheme_in_five_lines() -> None:
    body, t = b'{"a": 1}', 1_700_000_000
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("secret", t, body) == expected
    assert parse_signature(f"t={t},v1={expected}") == (t, [expected])
    assert parse_signature(f"t={t}, v1=AA, v1=bb") == (t, ["aa", "bb"])
    for bad in ("", "v1=aa", f"t={t}", "t=soon,v1=aa"):
        assert parse_signature(bad) is None


def test_keys_have_a_public_id_and_a_secret() -> None:
    key_id, secret, key = new_key_text()
    assert key == f"jsrt_{key_id}_{secret}" and parse_key(key) == (key_id, secret)
    assert parse_key("jsrt_short_x") is None and parse_key("Bearer " + key) is None
    assert new_key_text()[2] != key


def test_scopes() -> None:
    assert check_scopes(["invoke", " invoke", "scripts:read"]) == ("invoke", "scripts:read")
    with pytest.raises(ValidationError, match="unknown scope"):
        check_scopes(["root"])
    with pytest.raises(ValidationError, match="at least one scope"):
        check_scopes([""])
    caller = Caller("k", None, "op", ("invoke",))
    assert caller.may(uuid.uuid4(), "invoke") and not caller.may(uuid.uuid4(), "scripts:read")


def test_masking_covers_raw_and_json_escaped_forms() -> None:
    secret = 'p"a\\ss\nword'
    result = ExecutionResult(
        "failed", output_json=json.dumps({"k": secret, secret: [secret + "!"]}),
        error=f"Error: {secret}", stack=f"at x ({json.dumps(secret)})",
        logs=({"level": "log", "message": f"{secret} {json.dumps({'s': secret})}", "ts": 1},))
    masked = redact.result(result, [secret])
    assert json.loads(masked.output_json or "") == {"k": "[redacted]",
                                                    "[redacted]": ["[redacted]!"]}
    assert masked.error == "Error: [redacted]"
    assert masked.stack == 'at x ("[redacted]")'
    assert masked.logs[0]["message"] == '[redacted] {"s": "[redacted]"}'
    assert redact.result(result, []) is result


def test_a_longer_secret_is_masked_whole() -> None:
    assert redact.text("token-abcdef", redact.forms(["token", "token-abcdef"])) == "[redacted]"
