from __future__ import annotations

import base64
import hashlib
import hmac
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln.auth import authenticate, load_policies
from kiln.auth.basicauth import (
    MIN_SECRET_LENGTH,
    BasicAuthPolicy,
    BasicCredentials,
    parse_basic_credentials,
)
from kiln.config import Configuration
from kiln.errors import HTTPError
from kiln.exceptions import ConfigError

SECRET = "0123456789abcdef" * 4
SENTINEL = "hunter2-SENTINEL-password"


def basic(raw: bytes | str) -> dict[str, str]:
    if isinstance(raw, str):
        raw = raw.encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def make_policy(secret: str = SECRET, **project: str) -> BasicAuthPolicy:
    tree = {"auth": {"userid_hmac_secret": secret}, "project": project}
    return BasicAuthPolicy(Configuration.from_mapping(tree))


@pytest.fixture
def policy() -> BasicAuthPolicy:
    return make_policy()


def test_any_user_password_pair_is_an_identity_keyed_by_the_secret(policy):
    expected = hmac.new(SECRET.encode(), b"alice:secret", hashlib.sha256).hexdigest()
    assert policy.authenticated_userid(basic("alice:secret")) == expected


def test_the_identity_is_prefixed_with_basicauth(policy):
    identity = authenticate([policy], basic("alice:secret"))
    assert identity is not None
    assert identity.policy == "basicauth"
    assert identity.prefixed_id == f"basicauth:{identity.user_id}"


def test_changing_the_password_or_the_secret_changes_the_identity(policy):
    first = policy.authenticated_userid(basic("alice:one"))
    assert policy.authenticated_userid(basic("alice:two")) != first
    assert make_policy("z" * 64).authenticated_userid(basic("alice:one")) != first


def test_an_empty_password_is_an_identity_and_colons_belong_to_the_password(policy):
    assert policy.authenticated_userid(basic("alice:")) is not None
    assert parse_basic_credentials(basic("a:b:c")) == BasicCredentials("a", "b:c")


def test_an_empty_username_is_anonymous(policy):
    assert policy.authenticated_userid(basic(":password")) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic"},
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Basic é"},
        basic("no-colon"),
        basic(b"\xff\xfe:\xff"),
    ],
    ids=["none", "empty", "bearer", "no-payload", "bad-base64", "non-ascii", "no-colon", "latin"],
)
def test_missing_or_malformed_basic_headers_are_anonymous(policy, headers):
    assert policy.authenticated_userid(headers) is None


def test_the_scheme_is_case_insensitive_and_unicode_credentials_work(policy):
    headers = {"authorization": "bAsIc " + base64.b64encode("jösé:pässwörd☃".encode()).decode()}
    assert parse_basic_credentials(headers) == BasicCredentials("jösé", "pässwörd☃")
    assert policy.authenticated_userid(headers) is not None


def test_the_challenge_names_the_project_as_realm():
    assert make_policy(name='my "svc"').challenge() == 'Basic realm="my svc", charset="UTF-8"'


@pytest.mark.parametrize("secret", ["", "short", "x" * (MIN_SECRET_LENGTH - 1)])
def test_startup_refuses_an_empty_or_short_secret_and_says_how_to_make_one(secret):
    config = Configuration.from_mapping(
        {"auth": {"policies": ["basicauth"], "userid_hmac_secret": secret}}
    )
    with pytest.raises(ConfigError) as excinfo:
        load_policies(config)
    message = str(excinfo.value)
    assert 'python -c "import secrets; print(secrets.token_hex(32))"' in message
    assert "kiln init" in message
    assert secret not in message or secret == ""


def test_the_secret_is_never_shown_by_the_policy(policy):
    assert SECRET not in repr(policy)
    assert SECRET not in str(vars(policy).get("_challenge"))


def test_credentials_repr_hides_the_password():
    credentials = parse_basic_credentials(basic(f"alice:{SENTINEL}"))
    assert SENTINEL not in repr(credentials)
    assert "alice" in repr(credentials)


def test_no_log_line_carries_the_password_or_the_secret(policy, caplog):
    caplog.set_level(logging.DEBUG)
    for headers in (basic(f"alice:{SENTINEL}"), basic(f":{SENTINEL}"), basic(SENTINEL)):
        policy.authenticated_userid(headers)
    assert SENTINEL not in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "value",
    [
        "Basic " + "A" * 10_000,
        "Basic " + base64.b64encode(b"u:" + b":" * 10_000).decode(),
        "Basic " + base64.b64encode(("\u202e" * 3000 + ":p").encode()).decode(),
        "Basic \x00\x01\x7f\t\r",
        "Basic " + base64.b64encode(b"\x00\x1b[31m:\r\n").decode(),
        ":" * 10_000,
        "\u2028Basic\u00a0abc",
    ],
)
def test_hostile_headers_never_raise(policy, value):
    rv = policy.authenticated_userid({"Authorization": value})
    assert rv is None or (isinstance(rv, str) and len(rv) == 64)


@given(st.text())
def test_any_header_value_is_none_or_an_identity(value):
    rv = make_policy().authenticated_userid({"Authorization": value})
    assert rv is None or len(rv) == 64


@given(st.binary(max_size=300))
def test_any_basic_payload_is_none_or_an_identity(payload):
    headers = {"Authorization": "Basic " + base64.b64encode(payload).decode()}
    try:
        identity = authenticate([make_policy()], headers)
    except HTTPError:  # pragma: no cover - basicauth never rejects
        pytest.fail("basicauth answered 401")
    assert identity is None or identity.prefixed_id.startswith("basicauth:")


@given(st.binary(max_size=200))
def test_any_latin1_header_value_never_raises(raw):
    # WSGI hands header values over as latin-1 decoded strings.
    make_policy().authenticated_userid({"Authorization": raw.decode("latin-1")})
