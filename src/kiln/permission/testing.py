"""The permission contract suite: every backend runs it unchanged.

Subclass :class:`PermissionContract` in a test module and override its
``backend`` fixture with a fresh backend::

    class TestSQLitePermission(PermissionContract):
        @pytest.fixture
        def backend(self, tmp_path):
            return SQLitePermission(SQLiteDatabase(str(tmp_path / "db.sqlite")))

Optionally override ``broken_backend`` with a backend whose engine fails
(the driver-failure test skips otherwise). A backend without transactions
declares ``supports_transactions = False`` and the matching tests skip.
The fixtures every suite shares, and the lifecycle tests, come from
:class:`kiln._contract.BackendContract`. Needs ``pytest`` and ``hypothesis``.
"""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln._contract import BackendContract, property_settings
from kiln.exceptions import BackendError
from kiln.permission import PermissionBase
from kiln.storage.testing import HOSTILE_STRINGS, run_threads

__all__ = ["HOSTILE_IDS", "PermissionContract", "inherit", "reference_match"]

#: Object ids and principals that break naive SQL, LIKE, GLOB or patterns.
HOSTILE_IDS = (
    *HOSTILE_STRINGS,
    "?",
    "[",
    "]",
    "[a-z]",
    "/a/%",
    "/a/_",
    "/a/*",
    "/a/[*]",
    "/a/?",
    "nul\x00byte",
    "/a/\x00",
    "\U0010ffff",
    "/a\U0010ffff",
)


def reference_match(pattern: str, object_id: str) -> bool:
    """The pattern semantics, written independently of the backends: ``*``
    is any run of non-``/`` characters, everything else is literal."""
    regex = "".join("[^/]*" if c == "*" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, object_id, re.DOTALL) is not None


def inherit(object_id: str, permission: str) -> list[tuple[str, str]]:
    """Kinto-like bound permissions: ``write`` implies ``read``, and a
    permission on a parent path (``/b`` for ``/b/c``) grants it below."""
    parts = object_id.split("/")
    ancestors = ["/".join(parts[:i]) for i in range(2, len(parts) + 1)]
    perms = ["read", "write"] if permission == "read" else [permission]
    return [(a, p) for a in ancestors for p in perms]


class _Boom(Exception):
    """Raised by the tests to abort a unit of work."""


_ids = st.sampled_from(["/a", "/ab", "/a/b", "/a/bc", "/a/b/c", "/a*", "/a/%", "/a_b", "/ä"])
_principals = st.sampled_from(["alice", "bob", "%", "_", "*", "'", "system.Everyone"])
_perms = st.sampled_from(["read", "write"])
_patterns = st.sampled_from(["/a", "/*", "/a/*", "/a*", "/*/*", "/a/b*", "/*/b/*", "*", "/a_b"])


class PermissionContract(BackendContract):
    """The permission contract, as pytest tests; override :meth:`backend`."""

    @pytest.fixture
    def permission(self, ready: PermissionBase) -> PermissionBase:
        return ready

    # -- lifecycle -----------------------------------------------------

    def test_flush_removes_user_principals_and_aces(self, permission: PermissionBase) -> None:
        permission.add_user_principal("alice", "admins")
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.flush()
        assert permission.user_principals("alice") == set()
        assert permission.object_permissions("/a") == {}

    # -- user principals -----------------------------------------------

    def test_user_principals_are_added_once_and_removed(self, permission: PermissionBase) -> None:
        assert permission.user_principals("alice") == set()
        permission.add_user_principal("alice", "admins")
        permission.add_user_principal("alice", "admins")
        permission.add_user_principal("alice", "readers")
        assert permission.user_principals("alice") == {"admins", "readers"}
        permission.remove_user_principal("alice", "admins")
        permission.remove_user_principal("alice", "admins")
        permission.remove_user_principal("nobody", "admins")
        assert permission.user_principals("alice") == {"readers"}

    def test_remove_principal_takes_it_from_every_user_only(
        self, permission: PermissionBase
    ) -> None:
        permission.add_user_principal("alice", "admins")
        permission.add_user_principal("bob", "admins")
        permission.add_user_principal("bob", "readers")
        permission.add_principal_to_ace("/a", "read", "admins")
        permission.remove_principal("admins")
        permission.remove_principal("never-seen")
        assert permission.user_principals("alice") == set()
        assert permission.user_principals("bob") == {"readers"}
        assert permission.object_permission_principals("/a", "read") == {"admins"}

    def test_returned_sets_are_fresh(self, permission: PermissionBase) -> None:
        permission.add_user_principal("alice", "admins")
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.user_principals("alice").add("x")
        permission.object_permission_principals("/a", "read").add("x")
        permission.object_permissions("/a")["read"].add("x")
        assert permission.user_principals("alice") == {"admins"}
        assert permission.object_permissions("/a") == {"read": {"alice"}}

    # -- ACEs ------------------------------------------------------------

    def test_aces_are_added_once_and_removed(self, permission: PermissionBase) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/a", "read", "bob")
        permission.add_principal_to_ace("/a", "write", "bob")
        assert permission.object_permission_principals("/a", "read") == {"alice", "bob"}
        permission.remove_principal_from_ace("/a", "read", "alice")
        permission.remove_principal_from_ace("/a", "read", "alice")
        permission.remove_principal_from_ace("/nothing", "read", "alice")
        assert permission.object_permission_principals("/a", "read") == {"bob"}
        assert permission.object_permission_principals("/a", "write") == {"bob"}
        assert permission.object_permission_principals("/a", "other") == set()

    def test_objects_whose_ids_are_prefixes_of_each_other_are_isolated(
        self, permission: PermissionBase
    ) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/ab", "read", "bob")
        permission.add_principal_to_ace("/a/b", "read", "carol")
        assert permission.object_permission_principals("/a", "read") == {"alice"}
        assert not permission.check_permission("/ab", "read", ["alice"])
        assert permission.principals_accessible_objects(["alice", "bob"], "read", "/a") == {"/a"}
        assert permission.principals_accessible_objects(["bob"], "read", "/a*") == {"/ab"}
        permission.delete_object_permissions("/a")
        assert permission.object_permissions("/ab") == {"read": {"bob"}}
        assert permission.object_permissions("/a/b") == {"read": {"carol"}}

    def test_authorized_principals_follow_bound_permissions(
        self, permission: PermissionBase
    ) -> None:
        permission.add_principal_to_ace("/b", "write", "owner")
        permission.add_principal_to_ace("/b/c", "read", "reader")
        permission.add_principal_to_ace("/b/c", "write", "writer")
        permission.add_principal_to_ace("/b/cd", "read", "neighbour")
        assert permission.object_permission_authorized_principals("/b/c", "read") == {"reader"}
        assert permission.object_permission_authorized_principals("/b/c", "read", inherit) == {
            "owner",
            "reader",
            "writer",
        }

    def test_bound_permissions_always_include_the_object_itself(
        self, permission: PermissionBase
    ) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        assert permission.check_permission("/a", "read", ["alice"], lambda o, p: [])
        assert permission.object_permission_authorized_principals("/a", "read", lambda o, p: [])

    def test_check_permission_is_direct_or_bound(self, permission: PermissionBase) -> None:
        permission.add_principal_to_ace("/b", "write", "owner")
        permission.add_principal_to_ace("/b/c", "read", "reader")
        assert permission.check_permission("/b/c", "read", {"reader", "x"})
        assert not permission.check_permission("/b/c", "write", ["reader"])
        assert not permission.check_permission("/b/c", "read", ["owner"])
        assert permission.check_permission("/b/c", "read", ["owner"], inherit)
        assert permission.check_permission("/b/c/d", "write", ("owner", "owner"), inherit)
        assert not permission.check_permission("/bc", "read", ["owner"], inherit)

    def test_no_principals_are_granted_nothing(self, permission: PermissionBase) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        assert not permission.check_permission("/a", "read", [])
        assert not permission.check_permission("/a", "read", set(), inherit)
        assert permission.principals_accessible_objects([], "read") == set()
        assert permission.principals_accessible_objects((), "read", "/*", inherit) == set()

    def test_a_str_of_principals_is_refused(self, permission: PermissionBase) -> None:
        permission.add_principal_to_ace("/a", "read", "a")
        with pytest.raises(TypeError):
            permission.check_permission("/a", "read", "alice")
        with pytest.raises(TypeError):
            permission.principals_accessible_objects("alice", "read")
        with pytest.raises(TypeError):
            permission.replace_object_permissions("/a", {"read": "alice"})
        with pytest.raises(TypeError):
            permission.object_permissions("/a", "read")
        assert permission.object_permissions("/a") == {"read": {"a"}}

    def test_accessible_objects_without_a_pattern_are_all_objects_granting(
        self, permission: PermissionBase
    ) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/a/b/c", "read", "bob")
        permission.add_principal_to_ace("x", "read", "bob")
        permission.add_principal_to_ace("/d", "write", "alice")
        assert permission.principals_accessible_objects(["alice", "bob", "bob"], "read") == {
            "/a",
            "/a/b/c",
            "x",
        }

    def test_a_star_matches_within_one_segment_only(self, permission: PermissionBase) -> None:
        for object_id in ("/b", "/b/", "/b/c1", "/b/c2", "/b/c1/r", "/bx/c1", "/b/c1/r/s"):
            permission.add_principal_to_ace(object_id, "read", "alice")
        accessible = permission.principals_accessible_objects
        assert accessible(["alice"], "read", "/b/*") == {"/b/", "/b/c1", "/b/c2"}
        assert accessible(["alice"], "read", "/b*/c1") == {"/b/c1", "/bx/c1"}
        assert accessible(["alice"], "read", "/*/*/*") == {"/b/c1/r"}
        assert accessible(["alice"], "read", "/b/c*/r") == {"/b/c1/r"}
        assert accessible(["alice"], "read", "/b/*1*") == {"/b/c1"}
        assert accessible(["alice"], "read", "*") == set()
        assert accessible(["alice"], "read", "/b/c3") == set()

    @pytest.mark.parametrize("meta", ["%", "_", "[", "]", "?", "\\", "'", '"', "[!a]", "\x00"])
    def test_sql_and_glob_metacharacters_are_literal_in_patterns(
        self, permission: PermissionBase, meta: str
    ) -> None:
        literal = f"/b/x{meta}y"
        decoys = ["/b/xzy", "/b/xy", "/b/xaay", "/b/x", "/b/xzzzzy", f"/b/x{meta}"]
        for object_id in [literal, *decoys]:
            permission.add_principal_to_ace(object_id, "read", "alice")
        accessible = permission.principals_accessible_objects
        assert accessible(["alice"], "read", literal) == {literal}
        assert accessible(["alice"], "read", f"/b/x{meta}*") == {literal, f"/b/x{meta}"}
        assert accessible(["alice"], "read", f"/*/x{meta}y") == {literal}
        assert accessible(["alice"], "read", f"/b/*{meta}y") == {literal}

    def test_accessible_objects_follow_bound_patterns(self, permission: PermissionBase) -> None:
        permission.add_principal_to_ace("/b1", "write", "alice")
        permission.add_principal_to_ace("/b2/c1", "read", "alice")
        permission.add_principal_to_ace("/b2/c2", "write", "alice")
        permission.add_principal_to_ace("/b2/c3", "read", "bob")
        permission.add_principal_to_ace("/b2/c3/r", "read", "alice")

        def bound(pattern: str, perm: str) -> list[tuple[str, str]]:
            assert (pattern, perm) == ("/*/*", "read")
            return [("/*", "write"), ("/*/*", "write")]

        assert permission.principals_accessible_objects(["alice"], "read", "/*/*", bound) == {
            "/b1",
            "/b2/c1",
            "/b2/c2",
        }

    def test_bound_permissions_need_a_pattern(self, permission: PermissionBase) -> None:
        with pytest.raises(ValueError, match="object_id_match"):
            permission.principals_accessible_objects(["alice"], "read", None, inherit)

    def test_object_permissions_list_held_permissions(self, permission: PermissionBase) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/a", "read", "bob")
        permission.add_principal_to_ace("/a", "write", "alice")
        permission.add_principal_to_ace("/ab", "read", "carol")
        assert permission.object_permissions("/a") == {"read": {"alice", "bob"}, "write": {"alice"}}
        assert permission.object_permissions("/a", ["write", "nope", "write"]) == {
            "write": {"alice"}
        }
        assert permission.object_permissions("/a", []) == {}
        assert permission.object_permissions("/none") == {}

    def test_objects_permissions_read_several_objects_exactly(
        self, permission: PermissionBase
    ) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/a", "write", "bob")
        permission.add_principal_to_ace("/a/b", "read", "carol")
        permission.add_principal_to_ace("/ab", "read", "dave")
        assert permission.objects_permissions(["/a", "/a/b", "/none", "/a"]) == {
            "/a": {"read": {"alice"}, "write": {"bob"}},
            "/a/b": {"read": {"carol"}},
            "/none": {},
        }
        assert permission.objects_permissions([]) == {}
        with pytest.raises(TypeError):
            permission.objects_permissions("/a")

    def test_objects_permissions_and_principals_read_both_together(
        self, permission: PermissionBase
    ) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/a/b", "write", "group:g")
        permission.add_user_principal("alice", "group:g")
        permission.add_user_principal("alice", "group:h")
        permission.add_user_principal("bob", "group:b")
        assert permission.objects_permissions_and_principals(["/a", "/a/b", "/none"], "alice") == (
            {"/a": {"read": {"alice"}}, "/a/b": {"write": {"group:g"}}, "/none": {}},
            {"group:g", "group:h"},
        )
        assert permission.objects_permissions_and_principals([], "carol") == ({}, set())
        with pytest.raises(TypeError):
            permission.objects_permissions_and_principals("/a", "alice")

    def test_replace_objects_permissions_sets_each_object_at_once(
        self, permission: PermissionBase
    ) -> None:
        permission.replace_object_permissions("/a", {"read": ["alice", "bob"], "write": ["x"]})
        permission.add_principal_to_ace("/b", "read", "carol")
        permission.add_principal_to_ace("/c", "read", "dave")
        permission.replace_objects_permissions(
            {
                "/a": {"read": ["bob", "carol", "carol"]},
                "/b": {"read": [], "write": ["erin"]},
                "/c": {},
                "/new": {"write": ["frank"]},
            }
        )
        assert permission.objects_permissions(["/a", "/b", "/c", "/new"]) == {
            "/a": {"read": {"bob", "carol"}, "write": {"x"}},
            "/b": {"write": {"erin"}},
            "/c": {"read": {"dave"}},
            "/new": {"write": {"frank"}},
        }
        permission.replace_objects_permissions({})
        with pytest.raises(TypeError):
            permission.replace_objects_permissions({"/a": {"read": "bob"}})
        assert permission.object_permissions("/a") == {"read": {"bob", "carol"}, "write": {"x"}}

    def test_replace_object_permissions(self, permission: PermissionBase) -> None:
        permission.add_principal_to_ace("/a", "read", "alice")
        permission.add_principal_to_ace("/a", "write", "alice")
        permission.add_principal_to_ace("/a", "record:create", "alice")
        permission.replace_object_permissions(
            "/a", {"read": ["bob", "bob", "carol"], "write": [], "new": ("dan",)}
        )
        assert permission.object_permissions("/a") == {
            "read": {"bob", "carol"},
            "record:create": {"alice"},
            "new": {"dan"},
        }
        permission.replace_object_permissions("/a", {})
        permission.replace_object_permissions("/a", {"write": []})
        assert permission.object_permission_principals("/a", "read") == {"bob", "carol"}

    def test_delete_object_permissions_takes_exact_ids(self, permission: PermissionBase) -> None:
        for object_id in ("/a", "/a/*", "/a/b", "/c", "/d"):
            permission.add_principal_to_ace(object_id, "read", "alice")
            permission.add_principal_to_ace(object_id, "write", "bob")
        permission.delete_object_permissions()
        permission.delete_object_permissions("/a/*", "/c", "/c", "/never")
        remaining = permission.principals_accessible_objects(["alice"], "read")
        assert remaining == {"/a", "/a/b", "/d"}
        assert permission.object_permissions("/c") == {}

    # -- hostile strings -------------------------------------------------

    @pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
    def test_hostile_strings_are_stored_exactly_and_grant_nothing_else(
        self, permission: PermissionBase, hostile: str
    ) -> None:
        permission.add_principal_to_ace("/safe", "read", "alice")
        permission.add_principal_to_ace(hostile, hostile, hostile)
        permission.add_principal_to_ace(f"/b/{hostile}", "read", hostile)
        permission.add_user_principal(hostile, hostile)
        assert permission.user_principals(hostile) == {hostile}
        assert permission.object_permission_principals(hostile, hostile) == {hostile}
        assert permission.object_permissions(hostile) == {hostile: {hostile}}
        assert permission.check_permission(hostile, hostile, [hostile])
        assert not permission.check_permission("/safe", "read", [hostile])
        assert not permission.check_permission(hostile, "read", [hostile, "alice"])
        assert permission.object_permission_principals("/safe", "read") == {"alice"}
        accessible = permission.principals_accessible_objects
        assert accessible([hostile], "read", f"/b/{hostile}") == {f"/b/{hostile}"}
        assert accessible([hostile], "read", "/b/*") == (
            {f"/b/{hostile}"} if "/" not in hostile else set()
        )
        assert accessible([hostile], "read", hostile) == set()
        assert accessible(["alice"], "read", hostile) == (
            {"/safe"} if reference_match(hostile, "/safe") else set()
        )
        permission.replace_object_permissions(hostile, {hostile: [hostile, hostile]})
        permission.remove_principal(hostile)
        permission.delete_object_permissions(hostile)
        assert permission.object_permissions(hostile) == {}
        assert permission.user_principals(hostile) == set()
        assert permission.object_permission_principals("/safe", "read") == {"alice"}

    @property_settings(60)
    @given(
        aces=st.sets(st.tuples(_ids | st.text(max_size=6), _perms, _principals), max_size=12),
        principals=st.lists(_principals | st.text(max_size=3), max_size=4),
        object_id=_ids,
        perm=_perms,
        pattern=_patterns | st.text(alphabet="/*%_[?\\a\x00", max_size=6),
        bound=st.booleans(),
    )
    def test_answers_equal_a_reference_model(
        self,
        permission: PermissionBase,
        aces: set[tuple[str, str, str]],
        principals: list[str],
        object_id: str,
        perm: str,
        pattern: str,
        bound: bool,
    ) -> None:
        permission.flush()
        for ace in aces:
            permission.add_principal_to_ace(*ace)
        get_bound = inherit if bound else None
        pairs = {(object_id, perm), *(inherit(object_id, perm) if bound else [])}
        patterns = {(pattern, perm), *(inherit(pattern, perm) if bound else [])}
        wanted = set(principals)

        assert permission.object_permission_authorized_principals(object_id, perm, get_bound) == {
            who for (o, p, who) in aces if (o, p) in pairs
        }
        assert permission.check_permission(object_id, perm, principals, get_bound) == any(
            (o, p) in pairs and who in wanted for (o, p, who) in aces
        )
        assert permission.principals_accessible_objects(principals, perm, pattern, get_bound) == {
            o
            for (o, p, who) in aces
            if who in wanted and any(bp == p and reference_match(bo, o) for bo, bp in patterns)
        }
        assert permission.principals_accessible_objects(principals, perm) == {
            o for (o, p, who) in aces if who in wanted and p == perm
        }
        expected: dict[str, set[str]] = {}
        for o, p, who in aces:
            if o == object_id:
                expected.setdefault(p, set()).add(who)
        assert permission.object_permissions(object_id) == expected

    def test_ten_kilobyte_strings_work(self, permission: PermissionBase) -> None:
        big = "/b/" + "x" * 10_000
        principal = "p" * 10_000
        permission.add_principal_to_ace(big, "read", principal)
        assert permission.check_permission(big, "read", [principal], inherit)
        assert permission.principals_accessible_objects([principal], "read", "/b/*" + "x" * 99)
        pattern = "/b/" + "*x" * 5_000
        assert permission.principals_accessible_objects([principal], "read", pattern) == {big}
        assert not permission.principals_accessible_objects([principal], "read", pattern + "y")

    def test_many_principals_are_checked(self, permission: PermissionBase) -> None:
        principals = [f"group-{i}" for i in range(2_000)]
        permission.add_principal_to_ace("/a/b", "read", "group-1999")
        assert permission.check_permission("/a/b", "read", principals)
        assert permission.principals_accessible_objects(principals, "read", "/a/*") == {"/a/b"}
        assert not permission.check_permission("/a/b", "write", principals)

    # -- transactions ----------------------------------------------------

    def test_a_rollback_undoes_permission_changes(self, transactional: PermissionBase) -> None:
        transactional.add_principal_to_ace("/a", "read", "alice")
        transactional.add_user_principal("alice", "admins")

        def fail() -> None:
            with transactional.transaction():
                transactional.replace_object_permissions("/a", {"read": ["bob"]})
                transactional.add_principal_to_ace("/b", "write", "bob")
                transactional.remove_principal("admins")
                with transactional.transaction():
                    transactional.delete_object_permissions("/a")
                assert transactional.object_permissions("/a") == {}
                raise _Boom

        with pytest.raises(_Boom):
            fail()
        assert transactional.object_permissions("/a") == {"read": {"alice"}}
        assert transactional.object_permissions("/b") == {}
        assert transactional.user_principals("alice") == {"admins"}

    def test_a_flush_inside_a_transaction_is_undone_by_a_rollback(
        self, transactional: PermissionBase
    ) -> None:
        transactional.add_principal_to_ace("/a", "read", "alice")

        def fail() -> None:
            with transactional.transaction():
                transactional.flush()
                raise _Boom

        with pytest.raises(_Boom):
            fail()
        assert transactional.check_permission("/a", "read", ["alice"])

    def test_a_committed_transaction_keeps_its_changes(self, transactional: PermissionBase) -> None:
        with transactional.transaction():
            transactional.add_principal_to_ace("/a", "read", "alice")
            with transactional.transaction():
                transactional.add_user_principal("alice", "admins")
        assert transactional.check_permission("/a", "read", ["alice"])
        assert transactional.user_principals("alice") == {"admins"}

    def test_other_threads_never_see_uncommitted_writes(
        self, transactional: PermissionBase
    ) -> None:
        seen: list[bool] = []
        reader = threading.Thread(
            target=lambda: seen.append(transactional.check_permission("/a", "read", ["alice"]))
        )
        with transactional.transaction():
            transactional.add_principal_to_ace("/a", "read", "alice")
            reader.start()
            reader.join(0.3)
            # The reader either saw the committed state or waits for the commit.
            assert seen in ([], [False])
        reader.join()
        assert seen in ([False], [True])
        assert transactional.check_permission("/a", "read", ["alice"])

    # -- concurrency -----------------------------------------------------

    def test_concurrent_writers_end_in_the_right_state(self, permission: PermissionBase) -> None:
        def work(index: int) -> None:
            for n in range(10):
                permission.add_principal_to_ace("/shared", "read", f"user-{index}-{n}")
                permission.add_user_principal(f"user-{index}", f"group-{n}")
                if n % 2:
                    permission.remove_principal_from_ace("/shared", "read", f"user-{index}-{n}")
                permission.replace_object_permissions(f"/own/{index}", {"write": [f"u{n}"]})

        results = run_threads(8, work)
        assert results == [None] * 8
        expected = {f"user-{i}-{n}" for i in range(8) for n in range(0, 10, 2)}
        assert permission.object_permission_principals("/shared", "read") == expected
        for index in range(8):
            assert permission.user_principals(f"user-{index}") == {f"group-{n}" for n in range(10)}
            assert permission.object_permissions(f"/own/{index}") == {"write": {"u9"}}

    # -- failures --------------------------------------------------------

    def test_engine_failures_surface_as_backend_error(self, broken_backend: PermissionBase) -> None:
        with pytest.raises(BackendError):
            broken_backend.initialize_schema()
        with pytest.raises(BackendError):
            broken_backend.add_principal_to_ace("/a", "read", "alice")
        with pytest.raises(BackendError):
            broken_backend.check_permission("/a", "read", ["alice"])
        with pytest.raises(BackendError):
            broken_backend.principals_accessible_objects(["alice"], "read", "/*")
        assert broken_backend.heartbeat() is False
