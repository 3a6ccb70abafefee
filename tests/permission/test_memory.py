from __future__ import annotations

import pytest

from kiln.config import Configuration
from kiln.permission import load_permission, match_object_id
from kiln.permission.memory import MemoryPermission
from kiln.permission.testing import PermissionContract


class TestMemoryPermission(PermissionContract):
    @pytest.fixture
    def backend(self):
        return MemoryPermission()


class NonTransactionalPermission(MemoryPermission):
    supports_transactions = False


class TestNonTransactionalPermission(PermissionContract):
    @pytest.fixture
    def backend(self):
        return NonTransactionalPermission()


def test_load_permission_follows_the_storage_backend():
    config = Configuration.from_mapping({"storage": {"backend": "memory"}})
    permission = load_permission(config)
    assert isinstance(permission, MemoryPermission)
    assert permission.initialize_schema(dry_run=True) == []


def test_load_permission_reads_its_own_backend(tmp_path):
    config = Configuration.from_mapping(
        {"storage": {"url": str(tmp_path / "k.sqlite")}, "permission": {"backend": "memory"}}
    )
    assert isinstance(load_permission(config), MemoryPermission)


@pytest.mark.parametrize(
    ("pattern", "object_id", "matches"),
    [
        ("/a/*", "/a/b", True),
        ("/a/*", "/a/", True),
        ("/a/*", "/a/b/c", False),
        ("/a/*", "/a", False),
        ("/a/b*c*d", "/a/bxcyd", True),
        ("/a/b*c*d", "/a/bcd", True),
        ("/a/b*c*d", "/a/bd", False),
        ("/a/ab*ba", "/a/aba", False),
        ("/a/*x*", "/a/yyy", False),
        ("/a/**", "/a/", True),
        ("/a/b", "/a/b", True),
        ("/a/b", "/a/c", False),
    ],
)
def test_match_object_id(pattern, object_id, matches):
    assert match_object_id(pattern, object_id) is matches
