from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import pytest
from werkzeug.datastructures import Headers

from kiln.auth import (
    AUTHENTICATED,
    EVERYONE,
    AuthenticationPolicy,
    Identity,
    Principals,
    authenticate,
    get_header,
    load_policies,
    policies_need_storage,
    principals_for,
)
from kiln.auth.accounts import AccountsPolicy
from kiln.auth.basicauth import BasicAuthPolicy
from kiln.config import SETTINGS, Configuration, validate
from kiln.errors import ERRORS, HTTPError
from kiln.exceptions import ConfigError, StartupError
from kiln.storage.memory import MemoryStorage

SECRET = "s" * 64


class BearerTokenPolicy(AuthenticationPolicy):
    """A third-party policy written only against the ABC."""

    name = "bearer"

    def __init__(self, config: Any) -> None:
        self.tokens: dict[str, str] = dict(config.get("auth.bearer.tokens", {}))

    def authenticated_userid(self, headers: Mapping[str, str]) -> str | None:
        scheme, _, token = get_header(headers, "Authorization").strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        for known, user_id in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode("utf-8", "replace")):
                return user_id
        raise HTTPError(401, ERRORS.INVALID_AUTH_TOKEN, "Unknown bearer token.")

    def challenge(self) -> str:
        return 'Bearer realm="kiln"'


class NotAPolicy:
    def __init__(self, config: Any) -> None:
        pass


class ColonPolicy(BearerTokenPolicy):
    name = "bad:name"


class FixedPolicy(AuthenticationPolicy):
    def __init__(self, name: str, user_id: str | None) -> None:
        self.name = name
        self.user_id = user_id

    def authenticated_userid(self, headers: Mapping[str, str]) -> str | None:
        return self.user_id


BEARER_PATH = f"{__name__}.BearerTokenPolicy"


def config_with(**tree: Any) -> Configuration:
    return Configuration.from_mapping(tree)


def bearer_config() -> Configuration:
    return config_with(auth={"policies": [BEARER_PATH], "bearer": {"tokens": {"t0k3n": "alice"}}})


def test_no_policies_by_default_means_anonymous_only():
    assert load_policies(config_with()) == []
    assert authenticate([], {"Authorization": "Basic YTpi"}) is None


def test_builtin_names_build_the_builtin_policies():
    config = config_with(auth={"policies": ["basicauth"], "userid_hmac_secret": SECRET})
    [policy] = load_policies(config)
    assert isinstance(policy, BasicAuthPolicy)
    config = config_with(auth={"policies": ["accounts"]})
    [policy] = load_policies(config, storage=MemoryStorage())
    assert isinstance(policy, AccountsPolicy)


def test_a_bearer_policy_loads_by_dotted_path_and_identifies_its_tokens():
    policies = load_policies(bearer_config())
    identity = authenticate(policies, {"Authorization": "Bearer t0k3n"})
    assert identity == Identity("alice", "bearer:alice", "bearer")
    assert authenticate(policies, {}) is None
    assert policies[0].challenge() == 'Bearer realm="kiln"'


def test_a_wrong_bearer_token_stops_the_chain_with_401():
    policies = [*load_policies(bearer_config()), FixedPolicy("other", "bob")]
    with pytest.raises(HTTPError) as excinfo:
        authenticate(policies, {"authorization": "Bearer nope"})
    assert excinfo.value.status == 401
    assert excinfo.value.errno == ERRORS.INVALID_AUTH_TOKEN


def test_the_first_policy_that_identifies_wins():
    policies = [FixedPolicy("a", None), FixedPolicy("b", "bob"), FixedPolicy("c", "carol")]
    assert authenticate(policies, {}) == Identity("bob", "b:bob", "b")


def test_an_unknown_policy_name_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'basicaut' is not a known policy\. Did you mean"):
        load_policies(config_with(auth={"policies": ["basicaut"]}))
    with pytest.raises(ConfigError, match=r"'ldap' is not a known policy\. Use one of"):
        load_policies(config_with(auth={"policies": ["ldap"]}))


@pytest.mark.parametrize("value", ["basicauth", [""], [3], None])
def test_a_malformed_policy_list_is_a_config_error(value):
    with pytest.raises(ConfigError, match=r"auth\.policies.* must"):
        load_policies(config_with(auth={"policies": value}))


def test_a_module_that_does_not_import_is_a_config_error():
    with pytest.raises(ConfigError, match=r"module 'no_such_module' cannot be imported"):
        load_policies(config_with(auth={"policies": ["no_such_module.Policy"]}))


@pytest.mark.parametrize("attribute", ["NotAPolicy", "missing", "SECRET"])
def test_a_path_to_something_else_than_a_policy_class_is_a_config_error(attribute):
    with pytest.raises(ConfigError, match=r"must name a subclass of kiln\.auth\.Authentication"):
        load_policies(config_with(auth={"policies": [f"{__name__}.{attribute}"]}))


def test_a_policy_name_with_a_colon_is_a_config_error():
    with pytest.raises(ConfigError, match="no ':'"):
        load_policies(config_with(auth={"policies": [f"{__name__}.ColonPolicy"]}))


def test_two_policies_with_one_name_are_a_config_error():
    with pytest.raises(ConfigError, match="two policies named 'bearer'"):
        load_policies(config_with(auth={"policies": [BEARER_PATH, BEARER_PATH]}))


def test_basicauth_before_accounts_is_a_config_error():
    config = config_with(auth={"policies": ["basicauth", "accounts"], "userid_hmac_secret": SECRET})
    with pytest.raises(ConfigError, match="List 'accounts' first"):
        load_policies(config, storage=MemoryStorage())


def test_accounts_then_basicauth_is_kintos_chain():
    config = config_with(auth={"policies": ["accounts", "basicauth"], "userid_hmac_secret": SECRET})
    accounts, basicauth = load_policies(config, storage=MemoryStorage())
    assert isinstance(accounts, AccountsPolicy)
    assert isinstance(basicauth, BasicAuthPolicy)
    identity = authenticate([accounts, basicauth], {"Authorization": "Basic YTpi"})
    assert identity is not None
    assert identity.policy == "basicauth"


def test_accounts_rejecting_invalid_credentials_then_basicauth_is_a_config_error():
    config = config_with(
        auth={"policies": ["accounts", "basicauth"], "userid_hmac_secret": SECRET},
        accounts={"reject_invalid_credentials": True},
    )
    with pytest.raises(ConfigError, match="would never be reached"):
        load_policies(config, storage=MemoryStorage())


def test_only_policies_that_keep_state_need_storage():
    assert policies_need_storage(config_with(auth={"policies": ["accounts"]}))
    assert not policies_need_storage(config_with(auth={"policies": [BEARER_PATH]}))
    with pytest.raises(ConfigError, match="must be a list of policy names"):
        policies_need_storage(config_with(auth={"policies": [""]}))  # refused when loaded
    config = config_with()
    config.set("auth.policies", [""])  # set after validation: still checked
    with pytest.raises(ConfigError, match=r"'auth\.policies' must be a list of policy names"):
        policies_need_storage(config)


def test_accounts_without_storage_cannot_start():
    with pytest.raises(StartupError, match="'accounts' policy keeps its state"):
        load_policies(config_with(auth={"policies": ["accounts"]}))


def test_principals_of_an_anonymous_request_are_everyone_only():
    assert principals_for(None) == (EVERYONE,)
    assert principals_for(None, lambda _: {"group:x"}) == (EVERYONE,)


def test_principals_read_their_groups_once_and_only_when_asked():
    reads = []

    def groups(user_id):
        reads.append(user_id)
        return {"group:g", EVERYONE}

    identity = Identity("abc", "basicauth:abc", "basicauth")
    principals = Principals(identity, groups)
    assert principals.base == ("basicauth:abc", AUTHENTICATED, EVERYONE)
    assert (AUTHENTICATED in principals, "basicauth:abc" in principals) == (True, True)
    assert reads == []
    assert "unread" in repr(principals)
    assert "group:g" in principals
    assert reads == ["basicauth:abc"]
    expected = ("basicauth:abc", "group:g", AUTHENTICATED, EVERYONE)
    assert (principals == expected, len(principals), principals[1], principals[:2]) == (
        True,
        4,
        "group:g",
        expected[:2],
    )
    assert principals == Principals(identity, groups)
    assert hash(principals) == hash(expected)
    assert repr(principals) == f"Principals({expected!r})"
    assert reads == ["basicauth:abc", "basicauth:abc"]  # the second object read its own


def test_principals_handed_their_groups_read_nothing():
    def unreachable(_user_id):
        raise AssertionError("read")

    principals = Principals(Identity("abc", "basicauth:abc", "basicauth"), unreachable)
    assert principals.user_id == "basicauth:abc"
    assert principals.resolve({"group:h"}) == ("basicauth:abc", "group:h", AUTHENTICATED, EVERYONE)
    assert principals.known
    anonymous = Principals(None, unreachable)
    assert (anonymous.known, anonymous.user_id, list(anonymous)) == (True, None, [EVERYONE])
    assert Principals(Identity("abc", "basicauth:abc", "basicauth")).known


def test_principals_of_an_identity_are_sorted_and_deduplicated():
    identity = Identity("abc", "basicauth:abc", "basicauth")
    seen = []

    def groups(prefixed_id: str) -> set[str]:
        seen.append(prefixed_id)
        return {"/buckets/b/groups/g", EVERYONE, "basicauth:abc"}

    assert principals_for(identity, groups) == (
        "/buckets/b/groups/g",
        "basicauth:abc",
        AUTHENTICATED,
        EVERYONE,
    )
    assert seen == ["basicauth:abc"]
    assert principals_for(identity) == ("basicauth:abc", AUTHENTICATED, EVERYONE)


def test_get_header_is_case_insensitive_on_plain_dicts_and_header_objects():
    assert get_header({"AUTHORIZATION": "x"}, "Authorization") == "x"
    assert get_header(Headers({"authorization": "y"}), "Authorization") == "y"
    assert get_header({"Other": "z"}, "Authorization") == ""


def test_the_abc_defaults_send_no_challenge_close_quietly_and_hide_attributes():
    policy = FixedPolicy("fixed", "secret-user")
    assert policy.challenge() is None
    assert policy.close() is None
    assert repr(policy) == "<FixedPolicy name='fixed'>"


def test_identity_is_a_hashable_value():
    assert len({Identity("a", "p:a", "p"), Identity("a", "p:a", "p")}) == 1


def test_auth_settings_are_registered_and_validated():
    for key in (
        "auth.policies",
        "auth.userid_hmac_secret",
        "accounts.create_principals",
        "accounts.min_password_length",
        "accounts.argon2",
    ):
        assert key in SETTINGS
    problems = validate(
        {
            "auth": {"policies": [""]},
            "accounts": {
                "create_principals": [1],
                "min_password_length": 0,
                "argon2": {"time_cost": 0, "salt": 3},
            },
        }
    )
    text = " ".join(problems)
    assert "'auth.policies' must be a list" in text
    assert "'accounts.create_principals' must be a list of principals" in text
    assert "'accounts.min_password_length' must be at least 1" in text
    assert "'accounts.argon2' takes only" in text
    assert validate({"accounts": {"argon2": {"time_cost": True}}}) == [
        "Config key 'accounts.argon2' values must be positive integers."
    ]
    assert (
        validate(
            {
                "auth": {"policies": ["accounts"]},
                "accounts": {
                    "create_principals": ["system.Everyone"],
                    "min_password_length": 12,
                    "argon2": {"time_cost": 1, "memory_cost": 8, "parallelism": 1},
                },
            }
        )
        == []
    )


def test_a_policy_list_set_after_validation_is_still_checked():
    config = config_with()
    config.set("auth.policies", "basicauth")
    with pytest.raises(ConfigError, match=r"'auth\.policies' must be a list of policy names"):
        load_policies(config)
