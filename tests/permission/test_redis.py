from __future__ import annotations

import pytest

from kiln import _redis
from kiln.config import Configuration
from kiln.exceptions import ConfigError
from kiln.permission import load_permission
from kiln.permission.redis import RedisPermission
from kiln.permission.testing import HOSTILE_IDS, PermissionContract, inherit
from kiln.storage.testing import run_threads


class TestRedisPermission(PermissionContract):
    @pytest.fixture
    def backend(self, redis_connection):
        return RedisPermission(redis_connection.url)

    @pytest.fixture
    def broken_backend(self, broken_redis_url, closing):
        return closing(RedisPermission(broken_redis_url))


@pytest.fixture
def connection(redis_connection):
    return redis_connection


@pytest.fixture
def permission(connection, closing):
    return closing(RedisPermission(connection.url))


def _keys(connection):
    return sorted(key.decode() for key in connection.client.keys("*"))


def test_aces_and_their_indexes_live_under_documented_keys(permission, connection):
    permission.add_principal_to_ace("/b/c*", "read", "user:1")
    permission.add_user_principal("user:1", "/groups/g")
    assert _keys(connection) == [
        "kiln:permission:ace:%2Fb%2Fc%2A:read",
        "kiln:permission:holder:user%3A1:read",
        "kiln:permission:member:%2Fgroups%2Fg",
        "kiln:permission:object:%2Fb%2Fc%2A",
        "kiln:permission:user:user%3A1",
    ]
    assert connection.client.smembers("kiln:permission:holder:user%3A1:read") == {b"/b/c*"}
    assert connection.client.smembers("kiln:permission:object:%2Fb%2Fc%2A") == {b"read"}


def test_removing_everything_leaves_no_key_behind(permission, connection):
    permission.add_principal_to_ace("/a", "read", "alice")
    permission.add_principal_to_ace("/a", "write", "bob")
    permission.add_principal_to_ace("/b", "read", "alice")
    permission.replace_object_permissions("/c", {"read": ["carol", "dan"]})
    permission.add_user_principal("alice", "admins")
    permission.add_user_principal("bob", "admins")
    permission.remove_principal_from_ace("/a", "read", "alice")
    permission.remove_principal_from_ace("/a", "read", "nobody")
    assert permission.object_permissions("/a") == {"write": {"bob"}}
    permission.replace_object_permissions("/a", {"write": []})
    permission.replace_object_permissions("/c", {"read": ["erin"]})
    permission.delete_object_permissions("/b", "/c", "/never")
    permission.remove_principal("admins")
    assert _keys(connection) == []


def test_accessible_objects_follow_replacements_and_deletions(permission):
    permission.add_principal_to_ace("/b/1", "read", "alice")
    permission.replace_object_permissions("/b/1", {"read": ["bob"]})
    permission.add_principal_to_ace("/b/2", "read", "alice")
    permission.delete_object_permissions("/b/2")
    assert permission.principals_accessible_objects(["alice"], "read", "/b/*") == set()
    assert permission.principals_accessible_objects(["bob"], "read", "/b/*") == {"/b/1"}
    assert permission.principals_accessible_objects(["bob"], "read") == {"/b/1"}


def test_patterns_never_reach_redis_as_globs(permission):
    for object_id in ("/b/x", "/b/[x]", "/b/?", "/b/*", "/b/\\*", "/b/x/y"):
        permission.add_principal_to_ace(object_id, "read", "alice")
    accessible = permission.principals_accessible_objects
    assert accessible(["alice"], "read", "/b/[x]") == {"/b/[x]"}
    assert accessible(["alice"], "read", "/b/?") == {"/b/?"}
    assert accessible(["alice"], "read", "/b/\\*") == {"/b/\\*"}
    assert accessible(["alice"], "read", "/b/*") == {"/b/x", "/b/[x]", "/b/?", "/b/*", "/b/\\*"}


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_hostile_user_ids_and_principals_keep_their_own_sets(permission, hostile):
    permission.add_user_principal(hostile, "g1")
    permission.add_user_principal("plain", hostile)
    permission.add_principal_to_ace("/o", hostile, "plain")
    assert permission.user_principals(hostile) == {"g1"}
    assert permission.user_principals("plain") == {hostile}
    assert permission.object_permissions("/o") == {hostile: {"plain"}}
    permission.remove_principal(hostile)
    assert permission.user_principals("plain") == set()
    assert permission.user_principals(hostile) == {"g1"}


def test_concurrent_writers_keep_the_indexes_equal_to_the_aces(permission):
    def work(index):
        for n in range(12):
            object_id = f"/b/{n % 4}"
            permission.add_principal_to_ace(object_id, "read", f"p{(index + n) % 5}")
            permission.replace_object_permissions(object_id, {"write": [f"p{index}", f"p{n % 5}"]})
            if n % 3 == 0:
                permission.remove_principal_from_ace(object_id, "read", f"p{index % 5}")
            if n % 5 == 0:
                permission.delete_object_permissions(f"/b/{(n + 1) % 4}")

    assert run_threads(6, work) == [None] * 6
    principals = [f"p{i}" for i in range(6)]
    for perm in ("read", "write"):
        for principal in principals:
            expected = {
                f"/b/{n}"
                for n in range(4)
                if principal in permission.object_permission_principals(f"/b/{n}", perm)
            }
            assert permission.principals_accessible_objects([principal], perm, "/b/*") == expected
    for n in range(4):
        held = permission.object_permissions(f"/b/{n}")
        assert all(held.values())


def test_check_permission_with_no_principals_is_false(permission):
    permission.add_principal_to_ace("/a", "read", "alice")
    assert permission.check_permission("/a", "read", []) is False
    assert permission.principals_accessible_objects([], "read", "/*") == set()
    assert permission.check_permission("/a/b", "read", ["alice"], inherit) is True


def test_a_failing_transaction_keeps_its_writes_as_documented(permission):
    assert permission.supports_transactions is False

    def fail():
        with permission.transaction():
            permission.add_principal_to_ace("/a", "read", "alice")
            raise KeyError

    with pytest.raises(KeyError):
        fail()
    assert permission.check_permission("/a", "read", ["alice"])


def test_a_url_string_opens_the_shared_connection(redis_url):
    connection = _redis.acquire(redis_url)
    permission = RedisPermission(redis_url)
    try:
        assert permission.connection is connection
    finally:
        permission.close()
        permission.close()
        assert connection.users == 1
        connection.release()


def test_load_permission_uses_the_storage_url_by_default(redis_url):
    config = Configuration.from_mapping(
        {"storage": {"backend": "redis", "url": redis_url}, "redis": {"max_connections": 9}}
    )
    permission = load_permission(config)
    try:
        assert isinstance(permission, RedisPermission)
        assert permission.connection.url == redis_url
        assert permission.connection.options.max_connections == 9
        assert permission.heartbeat() is True
    finally:
        permission.close()


def test_load_permission_reads_its_own_url(redis_url):
    own = redis_url.rsplit("/", 1)[0] + "/14"
    config = Configuration.from_mapping(
        {"storage": {"backend": "sqlite"}, "permission": {"backend": "redis", "url": own}}
    )
    permission = load_permission(config)
    try:
        assert permission.connection.url == own
    finally:
        permission.close()


def test_load_permission_refuses_a_sqlite_url():
    config = Configuration.from_mapping({"permission": {"backend": "redis"}})
    with pytest.raises(ConfigError, match=r"permission\.backend is 'redis' but permission\.url"):
        load_permission(config)
