from __future__ import annotations

import base64
import logging
import traceback
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln._sqlite import SQLiteDatabase
from kiln.auth import authenticate, load_policies
from kiln.auth.accounts import (
    MAX_PASSWORD_LENGTH,
    RESOURCE_NAME,
    AccountExistsError,
    AccountNotFoundError,
    AccountsPolicy,
    AccountStore,
    InvalidCredentialsError,
    InvalidPasswordError,
    InvalidUsernameError,
    make_hasher,
)
from kiln.config import Configuration
from kiln.errors import ERRORS, HTTPError
from kiln.storage import PreconditionFailed, StorageBase
from kiln.storage.memory import MemoryStorage
from kiln.storage.sqlite import SQLiteStorage

SENTINEL = "hunter2-SENTINEL-password"
#: Cheap Argon2 parameters: the tests hash hundreds of passwords.
CHEAP = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


class CountingHasher(PasswordHasher):
    def __init__(self, **params: int) -> None:
        super().__init__(**params)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(str(hash))
        return super().verify(hash, password)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request, tmp_path):
    if request.param == "memory":
        yield MemoryStorage()
        return
    backend = SQLiteStorage(SQLiteDatabase(str(tmp_path / "accounts.sqlite")))
    backend.initialize_schema()
    yield backend
    backend.close()


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher(**CHEAP)


@pytest.fixture
def store(storage, hasher) -> AccountStore:
    return AccountStore(storage, hasher)


def accounts_config(**accounts) -> Configuration:
    return Configuration.from_mapping(
        {
            "auth": {"policies": ["accounts"]},
            "accounts": {"argon2": CHEAP, **accounts},
            "project": {"name": "svc"},
        }
    )


@pytest.fixture
def policy(storage) -> AccountsPolicy:
    [rv] = load_policies(accounts_config(), storage=storage)
    assert isinstance(rv, AccountsPolicy)
    return rv


@pytest.fixture
def strict_policy(storage) -> AccountsPolicy:
    [rv] = load_policies(accounts_config(reject_invalid_credentials=True), storage=storage)
    assert isinstance(rv, AccountsPolicy)
    return rv


def outcome(call: Callable[[], object]) -> object:
    try:
        return call()
    except HTTPError as error:
        return error.status


def basic(raw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


def test_create_stores_an_argon2_hash_and_returns_the_account_without_it(store, storage):
    account = store.create("alice", SENTINEL, email="alice@example.com")
    assert account["id"] == "alice"
    assert account["email"] == "alice@example.com"
    assert "password" not in account
    stored = storage.get(RESOURCE_NAME, "", "alice")
    assert stored["password"].startswith("$argon2id$")
    assert SENTINEL not in stored["password"]
    assert store.get("alice") == account


def test_create_twice_is_a_409_that_names_the_username(store):
    store.create("alice", SENTINEL)
    with pytest.raises(AccountExistsError, match="'alice' exists already") as excinfo:
        store.create("alice", "another-password")
    assert (excinfo.value.status, excinfo.value.errno) == (409, ERRORS.CONSTRAINT_VIOLATED)


@pytest.mark.parametrize("username", ["", "a:b", "-dash", "a b", "x" * 129, "é", 3])
def test_create_refuses_usernames_that_cannot_log_in(store, username):
    with pytest.raises(InvalidUsernameError) as excinfo:
        store.create(username, SENTINEL)
    assert excinfo.value.status == 400


@pytest.mark.parametrize("password", ["short", "x" * (MAX_PASSWORD_LENGTH + 1), None])
def test_create_refuses_too_short_or_too_long_passwords(store, password):
    with pytest.raises(InvalidPasswordError, match="8 to 1024 characters"):
        store.create("alice", password)


def test_the_minimum_password_length_is_a_setting(storage):
    [policy] = load_policies(accounts_config(min_password_length=12), storage=storage)
    assert isinstance(policy, AccountsPolicy)
    with pytest.raises(InvalidPasswordError, match="12 to"):
        policy.store.create("alice", "elevenchars")


def test_verify_accepts_the_password_and_refuses_others(store):
    store.create("alice", SENTINEL)
    assert store.verify("alice", SENTINEL)
    assert not store.verify("alice", SENTINEL + "x")
    assert not store.verify("alice", "")


def test_verify_of_an_unknown_user_hashes_a_dummy_to_take_as_long(store, hasher):
    store.create("alice", SENTINEL)
    assert not store.verify("bob", SENTINEL)
    assert not store.verify("not a valid name", SENTINEL)
    assert not store.verify("alice", "wrong-password")
    assert len(hasher.verified) == 3
    dummy = hasher.verified[0]
    assert dummy.startswith("$argon2id$")
    assert hasher.verified[1] == dummy
    assert hasher.verified[2] != dummy


def test_a_corrupted_hash_refuses_the_login_and_logs_no_secret(store, storage, caplog):
    storage.create(RESOURCE_NAME, "", {"id": "mallory", "password": "not-a-hash"})
    storage.create(RESOURCE_NAME, "", {"id": "nohash"})
    storage.create(RESOURCE_NAME, "", {"id": "broken", "password": "$argon2id$v=19$m=8,t=1,p=1$"})
    assert not store.verify("mallory", SENTINEL)
    assert not store.verify("nohash", SENTINEL)
    assert not store.verify("broken", SENTINEL)
    assert "not an Argon2 hash" in caplog.text
    assert SENTINEL not in caplog.text


def test_an_outdated_hash_is_rehashed_at_the_next_login(storage, caplog):
    old = AccountStore(storage, PasswordHasher(**CHEAP))
    old.create("alice", SENTINEL)
    before = storage.get(RESOURCE_NAME, "", "alice")
    new = AccountStore(storage, PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    caplog.set_level(logging.INFO)
    assert new.verify("alice", SENTINEL)
    after = storage.get(RESOURCE_NAME, "", "alice")
    assert after["password"] != before["password"]
    assert "$m=16,t=2,p=1$" in after["password"]
    assert not new.hasher.check_needs_rehash(after["password"])
    assert "Rehashed the password of account 'alice'" in caplog.text
    assert SENTINEL not in caplog.text
    assert new.verify("alice", SENTINEL)
    assert storage.get(RESOURCE_NAME, "", "alice")["last_modified"] == after["last_modified"]


def test_a_rehash_racing_a_password_change_keeps_the_change(storage, monkeypatch):
    AccountStore(storage, PasswordHasher(**CHEAP)).create("alice", SENTINEL)
    new = AccountStore(storage, PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))

    def changed_meanwhile(*args, **kwargs):
        raise PreconditionFailed(None)

    monkeypatch.setattr(storage, "update", changed_meanwhile)
    assert new.verify("alice", SENTINEL)


def test_change_password_checks_the_old_one(store):
    store.create("alice", SENTINEL)
    with pytest.raises(InvalidCredentialsError) as excinfo:
        store.change_password("alice", "wrong-password", "new-password")
    assert (excinfo.value.status, excinfo.value.errno) == (401, ERRORS.INVALID_AUTH_TOKEN)
    account = store.change_password("alice", SENTINEL, "new-password")
    assert "password" not in account
    assert store.verify("alice", "new-password")
    assert not store.verify("alice", SENTINEL)


def test_change_password_without_the_old_one_is_a_reset(store):
    store.create("alice", SENTINEL, email="a@example.com")
    store.change_password("alice", None, "reset-password")
    assert store.verify("alice", "reset-password")
    assert store.get("alice")["email"] == "a@example.com"


def test_change_password_of_an_unknown_account(store):
    with pytest.raises(InvalidCredentialsError):
        store.change_password("bob", SENTINEL, "new-password")
    with pytest.raises(AccountNotFoundError, match="No account named 'bob'"):
        store.change_password("bob", None, "new-password")
    with pytest.raises(InvalidPasswordError):
        store.change_password("bob", None, "short")


def test_delete_removes_the_account(store):
    store.create("alice", SENTINEL)
    tombstone = store.delete("alice")
    assert tombstone["deleted"] is True
    assert not store.verify("alice", SENTINEL)
    with pytest.raises(AccountNotFoundError) as excinfo:
        store.delete("alice")
    assert excinfo.value.status == 404
    with pytest.raises(AccountNotFoundError):
        store.get("alice")


def test_the_default_hasher_is_argon2_cffis_and_the_setting_overrides_it(storage):
    assert AccountStore(storage).hasher.time_cost == PasswordHasher().time_cost
    assert make_hasher(accounts_config()).memory_cost == 8
    default = Configuration.from_mapping({})
    assert make_hasher(default).memory_cost == PasswordHasher().memory_cost


def test_the_policy_identifies_an_account_by_its_username(policy):
    policy.store.create("alice", SENTINEL)
    identity = authenticate([policy], basic(f"alice:{SENTINEL}"))
    assert identity is not None
    assert (identity.user_id, identity.prefixed_id) == ("alice", "account:alice")


@pytest.mark.parametrize("credentials", ["alice:wrong-password", f"bob:{SENTINEL}", "x y:z"])
def test_the_policy_leaves_wrong_passwords_and_unknown_users_anonymous_alike(policy, credentials):
    policy.store.create("alice", SENTINEL)
    assert policy.authenticated_userid(basic(credentials)) is None


@pytest.mark.parametrize("credentials", ["alice:wrong-password", f"bob:{SENTINEL}", "x y:z"])
def test_the_strict_policy_answers_401_alike_for_wrong_passwords_and_unknown_users(
    strict_policy, credentials
):
    strict_policy.store.create("alice", SENTINEL)
    with pytest.raises(HTTPError) as excinfo:
        strict_policy.authenticated_userid(basic(credentials))
    error = excinfo.value
    assert (error.status, error.errno) == (401, ERRORS.INVALID_AUTH_TOKEN)
    assert error.message == "Invalid username or password."
    assert error.headers == {"WWW-Authenticate": 'Basic realm="svc", charset="UTF-8"'}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer abc"}, basic(f":{SENTINEL}"), basic("nocolon")]
)
def test_the_policy_leaves_requests_without_basic_credentials_anonymous(policy, headers):
    assert policy.authenticated_userid(headers) is None


def test_the_policy_challenges_with_basic_and_knows_who_may_sign_up(storage):
    [policy] = load_policies(
        accounts_config(create_principals=["system.Everyone"]), storage=storage
    )
    assert isinstance(policy, AccountsPolicy)
    assert policy.challenge() == 'Basic realm="svc", charset="UTF-8"'
    assert policy.may_create(("system.Everyone",))
    [closed] = load_policies(accounts_config(), storage=storage)
    assert isinstance(closed, AccountsPolicy)
    assert not closed.may_create(("system.Everyone", "system.Authenticated"))


def test_no_repr_exception_or_log_line_carries_a_password(strict_policy, caplog):
    policy = strict_policy
    caplog.set_level(logging.DEBUG)
    store = policy.store
    seen = [repr(policy), repr(store), str(store.create("alice", SENTINEL))]
    for call in (
        lambda: store.create("alice", SENTINEL),
        lambda: store.create("bad:name", SENTINEL),
        lambda: store.create("bob", SENTINEL[:3]),
        lambda: store.change_password("alice", SENTINEL + "x", SENTINEL),
        lambda: policy.authenticated_userid(basic(f"alice:{SENTINEL}x")),
        lambda: policy.authenticated_userid(basic(f"nobody:{SENTINEL}")),
    ):
        with pytest.raises(HTTPError) as excinfo:
            call()
        error = excinfo.value
        seen += [
            str(error),
            repr(error),
            repr(error.body),
            "".join(traceback.format_exception(error)),
        ]
    seen.append(caplog.text)
    assert not [text for text in seen if SENTINEL in text or SENTINEL[:3] + "'" in text]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300))
def test_any_header_value_is_none_an_identity_or_401(policy, value):
    if not policy.store.verify("alice", SENTINEL):
        policy.store.create("alice", SENTINEL)
    assert outcome(lambda: policy.authenticated_userid({"Authorization": value})) in (
        None,
        "alice",
        401,
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=200))
def test_any_basic_payload_is_none_an_identity_or_401(policy, payload):
    headers = {"Authorization": "Basic " + base64.b64encode(payload).decode()}
    assert outcome(lambda: authenticate([policy], headers)) in (None, 401)


def test_hostile_credentials_are_anonymous_or_401_when_strict(policy, strict_policy):
    for raw in ("a" * 10_000 + ":p", "alice:" + ":" * 10_000, "\x00\x1b:\r\n", "\u202e:é" * 500):
        assert policy.authenticated_userid(basic(raw)) is None
        with pytest.raises(HTTPError):
            strict_policy.authenticated_userid(basic(raw))


def test_accounts_live_in_their_own_collection(store, storage):
    store.create("alice", SENTINEL)
    assert [r["id"] for r in storage.list_all(RESOURCE_NAME, "")] == ["alice"]
    assert isinstance(store.storage, StorageBase)
