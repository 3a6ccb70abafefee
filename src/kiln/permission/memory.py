"""In-process permissions: dicts of frozensets, for tests and demos.

Published state is never mutated: a unit of work's first write takes the
process-wide write lock and makes a shallow copy of the two dicts
(copy-on-write), and its commit publishes the copy by swapping one
reference; a rollback drops it. Readers therefore need no lock and never
see uncommitted writes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from kiln.permission import (
    PermissionBase,
    match_object_id,
)

__all__ = ["MemoryPermission", "load"]

AceKey = tuple[str, str]
K = TypeVar("K")


class _State:
    __slots__ = ("aces", "users")

    def __init__(
        self,
        aces: dict[AceKey, frozenset[str]] | None = None,
        users: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.aces = aces if aces is not None else {}
        self.users = users if users is not None else {}

    def copy(self) -> _State:
        return _State(dict(self.aces), dict(self.users))


class _UnitOfWork(threading.local):
    depth = 0
    workspace: _State | None = None


def _put(mapping: dict[K, frozenset[str]], key: K, values: frozenset[str]) -> None:
    """Store ``values`` under ``key``; an empty set removes the key."""
    if values:
        mapping[key] = values
    else:
        mapping.pop(key, None)


class MemoryPermission(PermissionBase):
    """Permissions in Python dicts. Reads no settings."""

    def __init__(self) -> None:
        self._published = _State()
        self._write_lock = threading.Lock()
        self._unit = _UnitOfWork()

    # -- lifecycle -----------------------------------------------------

    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        return []

    def flush(self) -> None:
        with self.transaction():
            workspace = self._write()
            workspace.aces.clear()
            workspace.users.clear()

    def heartbeat(self) -> bool:
        return True

    @contextmanager
    def transaction(self) -> Iterator[None]:
        unit = self._unit
        unit.depth += 1
        try:
            yield
            if unit.depth == 1 and unit.workspace is not None:
                self._published = unit.workspace
        finally:
            unit.depth -= 1
            if unit.depth == 0 and unit.workspace is not None:
                unit.workspace = None
                self._write_lock.release()

    def _write(self) -> _State:
        """This unit's private copy, taking the write lock at its first write."""
        unit = self._unit
        if unit.workspace is None:
            self._write_lock.acquire()
            unit.workspace = self._published.copy()
        return unit.workspace

    def _read(self) -> _State:
        workspace = self._unit.workspace
        return self._published if workspace is None else workspace

    # -- user principals -----------------------------------------------

    def add_user_principal(self, user_id: str, principal: str) -> None:
        with self.transaction():
            users = self._write().users
            users[user_id] = users.get(user_id, frozenset()) | {principal}

    def remove_user_principal(self, user_id: str, principal: str) -> None:
        with self.transaction():
            users = self._write().users
            _put(users, user_id, users.get(user_id, frozenset()) - {principal})

    def remove_principal(self, principal: str) -> None:
        with self.transaction():
            users = self._write().users
            for user_id, principals in list(users.items()):
                if principal in principals:
                    _put(users, user_id, principals - {principal})

    def user_principals(self, user_id: str) -> set[str]:
        return set(self._read().users.get(user_id, ()))

    # -- access control entries ----------------------------------------

    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        with self.transaction():
            aces = self._write().aces
            key = (object_id, permission)
            aces[key] = aces.get(key, frozenset()) | {principal}

    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        with self.transaction():
            aces = self._write().aces
            key = (object_id, permission)
            _put(aces, key, aces.get(key, frozenset()) - {principal})

    def object_permission_principals(self, object_id: str, permission: str) -> set[str]:
        return set(self._read().aces.get((object_id, permission), ()))

    def _holders(self, pairs: set[tuple[str, str]]) -> set[str]:
        aces = self._read().aces
        rv: set[str] = set()
        for key in pairs:
            rv.update(aces.get(key, ()))
        return rv

    def _accessible_objects(
        self, principals: set[str], permission: str, patterns: set[tuple[str, str]] | None
    ) -> set[str]:
        aces = self._read().aces
        if patterns is None:
            return {
                object_id
                for (object_id, perm), holders in aces.items()
                if perm == permission and not holders.isdisjoint(principals)
            }
        return {
            object_id
            for (object_id, perm), holders in aces.items()
            if not holders.isdisjoint(principals)
            and any(p == perm and match_object_id(pattern, object_id) for pattern, p in patterns)
        }

    def _permissions_of(self, object_id: str, selected: set[str] | None) -> dict[str, set[str]]:
        aces = self._read().aces
        if selected is None:
            return {perm: set(holders) for (oid, perm), holders in aces.items() if oid == object_id}
        rv: dict[str, set[str]] = {}
        for perm in selected:
            holders = aces.get((object_id, perm))
            if holders:
                rv[perm] = set(holders)
        return rv

    def _replace_permissions(self, object_id: str, replacements: dict[str, set[str]]) -> None:
        with self.transaction():
            aces = self._write().aces
            for perm, principals in replacements.items():
                _put(aces, (object_id, perm), frozenset(principals))

    def delete_object_permissions(self, *object_ids: str) -> None:
        doomed = set(object_ids)
        if not doomed:
            return
        with self.transaction():
            aces = self._write().aces
            for key in [key for key in aces if key[0] in doomed]:
                del aces[key]


def load(config: Any) -> MemoryPermission:
    """The backend of ``permission.backend = "memory"`` (reads no other setting)."""
    return MemoryPermission()
