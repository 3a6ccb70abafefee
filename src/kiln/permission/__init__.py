"""Permission backends: who may do what on which object.

One abstract base class, :class:`PermissionBase`, whose docstrings are the
contract; implementations :mod:`kiln.permission.memory`,
:mod:`kiln.permission.sqlite`, :mod:`kiln.permission.postgresql` and
:mod:`kiln.permission.redis`; and the contract test suite
:mod:`kiln.permission.testing` that every implementation runs unchanged
(ARCHITECTURE D5). The API is Cliquet's
(``cliquet.permission``), with the fixes Kinto needed later.

Model
=====

- A **principal** is a string naming who acts: a user id
  (``basicauth:abc``), a group (``/buckets/b/groups/admins``) or a system
  principal (``system.Everyone``, ``system.Authenticated``). A request's
  principals are its user id, the system principals that apply, and the
  **user principals** stored here for that user
  (:meth:`~PermissionBase.user_principals`, i.e. group memberships).
- An **object id** is a string naming an object, by convention its URI
  without the version prefix (``/buckets/b/collections/c``).
- An **access control entry** (ACE) is a triple ``(object_id, permission,
  principal)``: ``principal`` holds ``permission`` (``read``, ``write``,
  ``record:create``, ...) on ``object_id``.
- **Bound permissions** express inheritance. ``get_bound_permissions`` is a
  callable the caller supplies, ``(object_id, permission) -> [(object_id,
  permission), ...]``: the pairs any of which grants ``permission`` on
  ``object_id``. With Kinto's tree, ``read`` on a record is granted by
  ``read`` or ``write`` on the record, its collection or its bucket. The
  backend consults the pairs returned **plus** ``(object_id, permission)``
  itself, always.

Strings
=======

Object ids, permissions and principals are any ``str`` (quotes, ``%``,
``_``, ``*``, ``[``, ``\\``, NUL, any Unicode, any length): they are
stored and compared exactly, case-sensitively, and never act as SQL or
pattern syntax -- except ``*`` inside a *pattern*, below. A collection of
principals or ids must not be a ``str`` itself (``TypeError``: iterating
``"alice"`` would test the principals ``a``, ``l``, ... and could grant
wrongly). Empty and duplicated collections are fine.

Patterns
========

:meth:`~PermissionBase.principals_accessible_objects` selects objects with
a pattern such as ``/buckets/*/collections/*``. In a pattern, ``*``
matches any run of characters (possibly empty) **within one path
segment**: it never matches ``/``. So ``/buckets/*`` matches
``/buckets/b1`` and ``/buckets/`` but neither ``/buckets/b1/collections/c1``
nor ``/buckets``. Every other character is literal; there is no escape for
``*`` (a literal ``*`` in an id is matched by ``*`` in a pattern like any
other character). Cliquet's Redis backend let ``*`` cross ``/`` (glob);
kiln does not, so a pattern for records never returns their children.
:func:`match_object_id` is the reference implementation.

Transactions
============

:meth:`~PermissionBase.transaction` has the storage's semantics (see
:mod:`kiln.storage`): the block is one unit of work of this thread,
committed when it exits normally and rolled back when it raises; nested
blocks join the outermost. The SQLite backend shares the unit of work of
every backend on the same file (:meth:`kiln._sqlite.SQLiteDatabase.shared`),
so one request is one transaction across storage and permissions.
Other threads never see a unit's writes before it commits.

Loading
=======

:func:`load_permission` builds the backend named by ``permission.backend``
(default: ``storage.backend``) on ``permission.url`` (default:
``storage.url``); see ``docs/permission.md``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from kiln.exceptions import BackendError

__all__ = [
    "BackendError",
    "BoundPermissions",
    "PermissionBase",
    "bound_pairs",
    "load_permission",
    "match_object_id",
    "principal_set",
]

#: ``get_bound_permissions(object_id, permission)``: the ``(object_id,
#: permission)`` pairs, any of which grants ``permission`` on ``object_id``.
BoundPermissions = Callable[[str, str], Iterable[tuple[str, str]]]


def match_object_id(pattern: str, object_id: str) -> bool:
    """Whether ``object_id`` matches ``pattern``, where ``*`` matches any run
    of characters except ``/`` (see the module docstring).

    Linear in practice (no regular expression, no backtracking blow-up)::

        >>> match_object_id("/buckets/*/collections/*", "/buckets/b/collections/c")
        True
        >>> match_object_id("/buckets/*", "/buckets/b/collections/c")
        False
    """
    segments = pattern.split("/")
    parts = object_id.split("/")
    if len(segments) != len(parts):
        return False
    return all(_match_segment(s, p) for s, p in zip(segments, parts, strict=True))


def _match_segment(pattern: str, text: str) -> bool:
    if "*" not in pattern:
        return pattern == text
    first, *middle, last = pattern.split("*")
    if len(first) + len(last) > len(text) or not (text.startswith(first) and text.endswith(last)):
        return False
    # With ``*`` as the only wildcard, the leftmost occurrence of each middle
    # part is always a valid choice.
    position, end = len(first), len(text) - len(last)
    for part in middle:
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def principal_set(principals: Iterable[str], argument: str = "principals") -> set[str]:
    """``principals`` as a set; a ``str`` is refused (it would be read as characters)."""
    if isinstance(principals, str):
        raise TypeError(f"{argument} must be a collection of strings, not a str.")
    return set(principals)


def bound_pairs(
    object_id: str, permission: str, get_bound_permissions: BoundPermissions | None
) -> set[tuple[str, str]]:
    """The ``(object_id, permission)`` pairs granting ``permission`` on ``object_id``."""
    pairs = {(object_id, permission)}
    if get_bound_permissions is not None:
        pairs.update((str(o), str(p)) for o, p in get_bound_permissions(object_id, permission))
    return pairs


class PermissionBase(abc.ABC):
    """The permission contract. Every method may raise :class:`BackendError`
    when the underlying engine fails; misuse raises ``TypeError`` or
    ``ValueError`` as documented; nothing else is raised.

    Sets returned are fresh: the caller may mutate them.

    :meth:`principals_accessible_objects`, :meth:`check_permission`,
    :meth:`object_permissions` and :meth:`replace_object_permissions` check
    their arguments here, once for every backend, then call the abstract
    method an implementation provides (``_accessible_objects``,
    ``_holds_any``, ``_permissions_of``, ``_replace_permissions``) with
    plain sets; empty ones are answered here. Likewise
    :meth:`object_permission_authorized_principals` expands the bound
    permissions and calls ``_holders``.
    """

    #: Capability flags; the contract suite skips tests of a missing capability.
    supports_transactions: bool = True

    # -- lifecycle -----------------------------------------------------

    @abc.abstractmethod
    def initialize_schema(self, dry_run: bool = False) -> list[str]:
        """Create or upgrade what the backend needs; idempotent.

        Returns a description of each step done (or, with ``dry_run``, that
        would be done).
        """

    @abc.abstractmethod
    def flush(self) -> None:
        """Remove every user principal and every ACE (tests)."""

    @abc.abstractmethod
    def heartbeat(self) -> bool:
        """Whether the backend answers (a cheap read); never raises."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release connections and files. The default does nothing."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """One unit of work; see the module docstring."""

    # -- user principals -----------------------------------------------

    @abc.abstractmethod
    def add_user_principal(self, user_id: str, principal: str) -> None:
        """Give ``user_id`` the principal ``principal`` (a group); idempotent."""

    @abc.abstractmethod
    def remove_user_principal(self, user_id: str, principal: str) -> None:
        """Take ``principal`` from ``user_id``; no-op when absent."""

    @abc.abstractmethod
    def remove_principal(self, principal: str) -> None:
        """Take ``principal`` from every user (a deleted group).

        ACEs naming ``principal`` are left alone, as in Cliquet.
        """

    @abc.abstractmethod
    def user_principals(self, user_id: str) -> set[str]:
        """The principals stored for ``user_id`` (empty if none)."""

    # -- access control entries ----------------------------------------

    @abc.abstractmethod
    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        """Grant ``permission`` on ``object_id`` to ``principal``; idempotent."""

    @abc.abstractmethod
    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        """Revoke it; no-op when absent."""

    @abc.abstractmethod
    def object_permission_principals(self, object_id: str, permission: str) -> set[str]:
        """The principals holding ``permission`` on ``object_id`` directly."""

    def object_permission_authorized_principals(
        self,
        object_id: str,
        permission: str,
        get_bound_permissions: BoundPermissions | None = None,
    ) -> set[str]:
        """The principals holding ``permission`` on ``object_id`` directly or
        through a bound permission: the union of
        :meth:`object_permission_principals` over ``(object_id, permission)``
        and every pair ``get_bound_permissions(object_id, permission)``
        returns (whose object ids are exact ids, not patterns).
        """
        return self._holders(bound_pairs(object_id, permission, get_bound_permissions))

    @abc.abstractmethod
    def _holders(self, pairs: set[tuple[str, str]]) -> set[str]:
        """The principals holding one of the ``(object_id, permission)`` ``pairs``."""

    def principals_accessible_objects(
        self,
        principals: Iterable[str],
        permission: str,
        object_id_match: str | None = None,
        get_bound_permissions: BoundPermissions | None = None,
    ) -> set[str]:
        """The ids of the objects on which one of ``principals`` holds
        ``permission``, among those matching the pattern ``object_id_match``
        (every object when ``None``).

        With ``get_bound_permissions``, it is called as
        ``get_bound_permissions(object_id_match, permission)`` and its pairs
        are themselves *patterns* (``("/buckets/*", "write")``): the result
        is every object id matching the pattern of a pair on which one of
        ``principals`` holds the pair's permission. An id in the result may
        thus be an ancestor (``/buckets/b``), meaning "everything below"; the
        caller interprets it, as Kinto's ``RouteFactory`` does.

        Answered by the engine's indexes, without loading every ACE.

        :raises ValueError: ``get_bound_permissions`` without ``object_id_match``.
        :raises TypeError: ``principals`` is a ``str``.
        """
        wanted = principal_set(principals)
        if object_id_match is None and get_bound_permissions is not None:
            raise ValueError("get_bound_permissions needs an object_id_match pattern.")
        if not wanted:
            return set()
        if object_id_match is None:
            return self._accessible_objects(wanted, permission, None)
        patterns = bound_pairs(object_id_match, permission, get_bound_permissions)
        return self._accessible_objects(wanted, permission, patterns)

    @abc.abstractmethod
    def _accessible_objects(
        self, principals: set[str], permission: str, patterns: set[tuple[str, str]] | None
    ) -> set[str]:
        """:meth:`principals_accessible_objects` once its arguments are checked:
        ``principals`` is not empty; ``patterns`` is None (every object on which
        one of them holds ``permission``) or ``(pattern, permission)`` pairs."""

    def check_permission(
        self,
        object_id: str,
        permission: str,
        principals: Iterable[str],
        get_bound_permissions: BoundPermissions | None = None,
    ) -> bool:
        """Whether one of ``principals`` holds ``permission`` on ``object_id``,
        directly or through a bound permission (exact ids); ``False`` for no
        principals.

        :raises TypeError: ``principals`` is a ``str``.
        """
        wanted = principal_set(principals)
        if not wanted:
            return False
        return self._holds_any(wanted, bound_pairs(object_id, permission, get_bound_permissions))

    def _holds_any(self, principals: set[str], pairs: set[tuple[str, str]]) -> bool:
        """:meth:`check_permission` once its arguments are checked: whether one
        of ``principals`` (not empty) holds one of the ``(object_id,
        permission)`` ``pairs``. This one reads every holder (:meth:`_holders`);
        a backend may answer with less."""
        return not self._holders(pairs).isdisjoint(principals)

    def object_permissions(
        self, object_id: str, permissions: Iterable[str] | None = None
    ) -> dict[str, set[str]]:
        """``{permission: principals}`` of ``object_id``, for the permissions
        held by at least one principal (only those in ``permissions`` when
        given). A permission nobody holds is absent, never an empty set.

        :raises TypeError: ``permissions`` is a ``str``.
        """
        if permissions is None:
            return self._permissions_of(object_id, None)
        selected = principal_set(permissions, "permissions")
        return self._permissions_of(object_id, selected) if selected else {}

    def objects_permissions(self, object_ids: Iterable[str]) -> dict[str, dict[str, set[str]]]:
        """:meth:`object_permissions` of each of ``object_ids`` (exact ids), read
        together: ``{object_id: {permission: principals}}``, with ``{}`` for an
        object without ACEs (Kinto's ``get_objects_permissions``).

        This implementation reads them one by one; backends override it to
        read them at once.

        :raises TypeError: ``object_ids`` is a ``str``.
        """
        ids = principal_set(object_ids, "object_ids")
        return {object_id: self._permissions_of(object_id, None) for object_id in sorted(ids)}

    def objects_permissions_and_principals(
        self, object_ids: Iterable[str], user_id: str
    ) -> tuple[dict[str, dict[str, set[str]]], set[str]]:
        """:meth:`objects_permissions` of ``object_ids`` and :meth:`user_principals`
        of ``user_id``, read together: what a permission check needs, in one
        round trip where the backend allows (PostgreSQL: one statement;
        Redis: one pipeline).

        :raises TypeError: ``object_ids`` is a ``str``.
        """
        return self.objects_permissions(object_ids), self.user_principals(user_id)

    @abc.abstractmethod
    def _permissions_of(self, object_id: str, selected: set[str] | None) -> dict[str, set[str]]:
        """:meth:`object_permissions` once its arguments are checked: the
        permissions of ``object_id`` among ``selected`` (not empty), or all."""

    def replace_object_permissions(
        self, object_id: str, permissions: Mapping[str, Iterable[str]]
    ) -> None:
        """Set the principals of each permission in ``permissions``, atomically.

        An empty collection clears that permission; permissions not in the
        mapping are left alone; duplicated principals count once.

        :raises TypeError: a value is a ``str``.
        """
        replacements = {
            perm: principal_set(principals, f"permissions[{perm!r}]")
            for perm, principals in permissions.items()
        }
        if replacements:
            self._replace_permissions(object_id, replacements)

    @abc.abstractmethod
    def _replace_permissions(self, object_id: str, replacements: dict[str, set[str]]) -> None:
        """:meth:`replace_object_permissions` once its arguments are checked:
        ``{permission: principals}``, not empty."""

    def replace_objects_permissions(
        self, changes: Mapping[str, Mapping[str, Iterable[str]]]
    ) -> None:
        """:meth:`replace_object_permissions` of several objects at once:
        ``{object_id: {permission: principals}}``, each object atomically.

        This implementation writes them one by one; backends override
        :meth:`_replace_many` to write them together.

        :raises TypeError: a value is a ``str``.
        """
        checked = {
            object_id: {
                perm: principal_set(principals, f"permissions[{perm!r}]")
                for perm, principals in permissions.items()
            }
            for object_id, permissions in changes.items()
        }
        checked = {
            object_id: replacements for object_id, replacements in checked.items() if replacements
        }
        if checked:
            self._replace_many(checked)

    def _replace_many(self, changes: dict[str, dict[str, set[str]]]) -> None:
        """:meth:`replace_objects_permissions` once its arguments are checked
        (no object without replacements, at least one object)."""
        for object_id, replacements in changes.items():
            self._replace_permissions(object_id, replacements)

    @abc.abstractmethod
    def delete_object_permissions(self, *object_ids: str) -> None:
        """Remove every ACE of each object. Ids are exact, never patterns
        (``*`` is literal here); no ids is a no-op."""


# -- loading -----------------------------------------------------------------


def _register_settings() -> None:
    from kiln.config import Setting, register_setting

    for setting in (
        Setting(
            "permission.backend",
            (str, None),
            None,
            "Permission backend: `sqlite` (tables in a local file), `redis` (a Redis server) "
            "or `memory` (per process); default: the storage backend.",
        ),
        Setting(
            "permission.url",
            (str, None),
            None,
            "SQLite database file, or Redis URL, of the permissions; default: `storage.url` "
            "(with SQLite, one transaction per request across storage and permissions).",
        ),
    ):
        register_setting(setting)


_register_settings()


def load_permission(config: Any) -> PermissionBase:
    """Build the permission backend configured in ``config`` (a
    :class:`kiln.config.Configuration`).

    The SQLite backend shares the storage's file (and connections, and units
    of work) unless ``permission.url`` names another. Call
    :meth:`PermissionBase.initialize_schema` once (``kiln migrate``).

    :raises kiln.exceptions.ConfigError: ``permission.backend`` is unknown.
    """
    from kiln.storage import load_backend

    name = config.setting("permission.backend") or config.setting("storage.backend")
    backend: PermissionBase = load_backend("permission", name, config)
    return backend
