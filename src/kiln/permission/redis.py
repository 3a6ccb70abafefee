"""Permissions in Redis sets, with reverse indexes so no query scans keys.

Layout (``<x>`` is the string ``x`` percent-encoded by
:func:`kiln._redis.encode_key_part`: no ``:``, no glob character)::

    kiln:permission:user:<user_id>                SET  principals of the user (groups)
    kiln:permission:member:<principal>            SET  user ids holding the principal
    kiln:permission:ace:<object_id>:<permission>  SET  principals holding permission on object
    kiln:permission:object:<object_id>            SET  permissions with at least one principal
    kiln:permission:holder:<principal>:<permission> SET  object ids the principal holds it on

Every write is one Lua script that updates a set and its indexes together
(keys are built in the script by the same encoding), so the indexes never
disagree with the ACEs. ``principals_accessible_objects`` reads the
``holder`` sets of the given principals (``SUNION``) and matches patterns
in Python with :func:`kiln.permission.match_object_id`: Redis glob syntax
is never used on ids, and ``*`` never crosses ``/``. Its cost is
proportional to the objects those principals hold the permission on.

No transactions: :meth:`RedisPermission.transaction` groups nothing
(``supports_transactions = False``); each method is atomic on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kiln._redis import (
    LUA_ENCODE_KEY_PART,
    RedisBackend,
    RedisConnection,
    connection_from_config,
    encode_key_part,
)
from kiln.permission import (
    PermissionBase,
    match_object_id,
    principal_set,
)

__all__ = ["RedisPermission", "load"]

NAMESPACE = "kiln:permission:"
#: Keys per ``SUNION`` when reading the sets of many principals.
KEYS_PER_COMMAND = 1000

_LUA_KEYS = (
    LUA_ENCODE_KEY_PART
    + """
local ns = ARGV[1]
local function user_key(user_id)
  return ns .. 'user:' .. encode_key_part(user_id)
end
local function member_key(principal)
  return ns .. 'member:' .. encode_key_part(principal)
end
local function ace_key(object_id, permission)
  return ns .. 'ace:' .. encode_key_part(object_id) .. ':' .. encode_key_part(permission)
end
local function object_key(object_id)
  return ns .. 'object:' .. encode_key_part(object_id)
end
local function holder_key(principal, permission)
  return ns .. 'holder:' .. encode_key_part(principal) .. ':' .. encode_key_part(permission)
end
"""
)

# ARGV: ns, user_id, principal.
_ADD_USER_PRINCIPAL = (
    _LUA_KEYS
    + """
redis.call('SADD', user_key(ARGV[2]), ARGV[3])
redis.call('SADD', member_key(ARGV[3]), ARGV[2])
"""
)

# ARGV: ns, user_id, principal.
_REMOVE_USER_PRINCIPAL = (
    _LUA_KEYS
    + """
redis.call('SREM', user_key(ARGV[2]), ARGV[3])
redis.call('SREM', member_key(ARGV[3]), ARGV[2])
"""
)

# ARGV: ns, principal.
_REMOVE_PRINCIPAL = (
    _LUA_KEYS
    + """
for _, user_id in ipairs(redis.call('SMEMBERS', member_key(ARGV[2]))) do
  redis.call('SREM', user_key(user_id), ARGV[2])
end
redis.call('DEL', member_key(ARGV[2]))
"""
)

# ARGV: ns, object_id, permission, principal.
_ADD_ACE = (
    _LUA_KEYS
    + """
redis.call('SADD', ace_key(ARGV[2], ARGV[3]), ARGV[4])
redis.call('SADD', object_key(ARGV[2]), ARGV[3])
redis.call('SADD', holder_key(ARGV[4], ARGV[3]), ARGV[2])
"""
)

# ARGV: ns, object_id, permission, principal.
_REMOVE_ACE = (
    _LUA_KEYS
    + """
local ace = ace_key(ARGV[2], ARGV[3])
redis.call('SREM', ace, ARGV[4])
redis.call('SREM', holder_key(ARGV[4], ARGV[3]), ARGV[2])
if redis.call('SCARD', ace) == 0 then
  redis.call('SREM', object_key(ARGV[2]), ARGV[3])
end
"""
)

_CLEAR_ACE = """
local function clear_ace(object_id, permission)
  local ace = ace_key(object_id, permission)
  for _, principal in ipairs(redis.call('SMEMBERS', ace)) do
    redis.call('SREM', holder_key(principal, permission), object_id)
  end
  redis.call('DEL', ace)
end
"""

# ARGV: ns, object_id, then per permission: permission, n, n principals.
_REPLACE = (
    _LUA_KEYS
    + _CLEAR_ACE
    + """
local object_id = ARGV[2]
local i = 3
while i <= #ARGV do
  local permission, count = ARGV[i], tonumber(ARGV[i + 1])
  clear_ace(object_id, permission)
  local ace = ace_key(object_id, permission)
  for j = i + 2, i + 1 + count do
    redis.call('SADD', ace, ARGV[j])
    redis.call('SADD', holder_key(ARGV[j], permission), object_id)
  end
  if count > 0 then
    redis.call('SADD', object_key(object_id), permission)
  else
    redis.call('SREM', object_key(object_id), permission)
  end
  i = i + 2 + count
end
"""
)

# ARGV: ns, object ids...
_DELETE_OBJECTS = (
    _LUA_KEYS
    + _CLEAR_ACE
    + """
for i = 2, #ARGV do
  local object = object_key(ARGV[i])
  for _, permission in ipairs(redis.call('SMEMBERS', object)) do
    clear_ace(ARGV[i], permission)
  end
  redis.call('DEL', object)
end
"""
)

# ARGV: ns, object_id. Returns {permission, {principals}, ...}.
_OBJECT_PERMISSIONS = (
    _LUA_KEYS
    + """
local rv = {}
for _, permission in ipairs(redis.call('SMEMBERS', object_key(ARGV[2]))) do
  table.insert(rv, permission)
  table.insert(rv, redis.call('SMEMBERS', ace_key(ARGV[2], permission)))
end
return rv
"""
)


def _strings(members: Iterable[bytes]) -> set[str]:
    return {member.decode() for member in members}


def _chunks(items: list[str], size: int = KEYS_PER_COMMAND) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RedisPermission(RedisBackend, PermissionBase):
    """Permissions in a Redis database.

    Settings (read by :func:`load`): ``permission.url`` (default:
    ``storage.url``; a Redis URL) and ``redis.connect_timeout_seconds``,
    ``redis.timeout_seconds``, ``redis.max_connections``.

    :param connection: a :class:`~kiln._redis.RedisConnection`, or a URL
        (then the process's shared connection to it); released by
        :meth:`close`.
    :param namespace: prefix of every key.
    """

    supports_transactions = False

    def __init__(
        self,
        connection: RedisConnection | str = "redis://localhost:6379/0",
        *,
        namespace: str = NAMESPACE,
    ) -> None:
        super().__init__(connection, namespace)
        register = self.connection.register_script
        self._add_user_principal = register(_ADD_USER_PRINCIPAL)
        self._remove_user_principal = register(_REMOVE_USER_PRINCIPAL)
        self._remove_principal = register(_REMOVE_PRINCIPAL)
        self._add_ace = register(_ADD_ACE)
        self._remove_ace = register(_REMOVE_ACE)
        self._replace = register(_REPLACE)
        self._delete_objects = register(_DELETE_OBJECTS)
        self._object_permissions = register(_OBJECT_PERMISSIONS)

    # -- keys --------------------------------------------------------------

    def _user_key(self, user_id: str) -> str:
        return f"{self.namespace}user:{encode_key_part(user_id)}"

    def _ace_key(self, object_id: str, permission: str) -> str:
        return f"{self.namespace}ace:{encode_key_part(object_id)}:{encode_key_part(permission)}"

    def _holder_key(self, principal: str, permission: str) -> str:
        return f"{self.namespace}holder:{encode_key_part(principal)}:{encode_key_part(permission)}"

    def _run(self, script: Any, *args: str) -> Any:
        with self.connection.errors():
            return script(args=[self.namespace, *args])

    def _sunion(self, keys: list[str]) -> set[str]:
        """Members of the union of ``keys`` (in chunks, one round trip)."""
        with self.connection.errors():
            pipe = self.connection.client.pipeline(transaction=False)
            for chunk in _chunks(keys):
                pipe.sunion(chunk)
            replies = pipe.execute()
        return {member.decode() for reply in replies for member in reply}

    # -- lifecycle (initialize_schema, flush, heartbeat, close, transaction:
    # RedisBackend; transaction groups nothing, see the module) ----------

    # -- user principals -----------------------------------------------

    def add_user_principal(self, user_id: str, principal: str) -> None:
        self._run(self._add_user_principal, user_id, principal)

    def remove_user_principal(self, user_id: str, principal: str) -> None:
        self._run(self._remove_user_principal, user_id, principal)

    def remove_principal(self, principal: str) -> None:
        self._run(self._remove_principal, principal)

    def user_principals(self, user_id: str) -> set[str]:
        with self.connection.errors():
            return _strings(self.connection.client.smembers(self._user_key(user_id)))

    # -- access control entries ----------------------------------------

    def add_principal_to_ace(self, object_id: str, permission: str, principal: str) -> None:
        self._run(self._add_ace, object_id, permission, principal)

    def remove_principal_from_ace(self, object_id: str, permission: str, principal: str) -> None:
        self._run(self._remove_ace, object_id, permission, principal)

    def object_permission_principals(self, object_id: str, permission: str) -> set[str]:
        with self.connection.errors():
            return _strings(self.connection.client.smembers(self._ace_key(object_id, permission)))

    def _holders(self, pairs: set[tuple[str, str]]) -> set[str]:
        return self._sunion([self._ace_key(o, p) for o, p in sorted(pairs)])

    def _accessible_objects(
        self, principals: set[str], permission: str, patterns: set[tuple[str, str]] | None
    ) -> set[str]:
        wanted = sorted(principals)
        if patterns is None:
            return self._sunion([self._holder_key(p, permission) for p in wanted])
        by_permission: dict[str, list[str]] = {}
        for pattern, perm in patterns:
            by_permission.setdefault(perm, []).append(pattern)
        rv: set[str] = set()
        for perm, perm_patterns in by_permission.items():
            held = self._sunion([self._holder_key(p, perm) for p in wanted])
            rv.update(o for o in held if any(match_object_id(pat, o) for pat in perm_patterns))
        return rv

    def _permissions_of(self, object_id: str, selected: set[str] | None) -> dict[str, set[str]]:
        if selected is None:
            reply = self._run(self._object_permissions, object_id)
            return {reply[i].decode(): _strings(reply[i + 1]) for i in range(0, len(reply), 2)}
        ordered = sorted(selected)
        with self.connection.errors():
            pipe = self.connection.client.pipeline(transaction=True)
            for perm in ordered:
                pipe.smembers(self._ace_key(object_id, perm))
            replies = pipe.execute()
        return {
            perm: _strings(members)
            for perm, members in zip(ordered, replies, strict=True)
            if members
        }

    def objects_permissions(self, object_ids: Iterable[str]) -> dict[str, dict[str, set[str]]]:
        return self._read_access(object_ids, None)[0]

    def objects_permissions_and_principals(
        self, object_ids: Iterable[str], user_id: str
    ) -> tuple[dict[str, dict[str, set[str]]], set[str]]:
        return self._read_access(object_ids, user_id)

    def _read_access(
        self, object_ids: Iterable[str], user_id: str | None
    ) -> tuple[dict[str, dict[str, set[str]]], set[str]]:
        """The permissions of ``object_ids`` and the principals of ``user_id``
        (none when ``None``), in one pipeline."""
        ordered = sorted(principal_set(object_ids, "object_ids"))
        with self.connection.errors():
            pipe = self.connection.client.pipeline(transaction=False)
            for object_id in ordered:
                self._object_permissions(args=[self.namespace, object_id], client=pipe)
            if user_id is not None:
                pipe.smembers(self._user_key(user_id))
            replies = pipe.execute()
        groups = _strings(replies.pop()) if user_id is not None else set()
        acls = {
            object_id: {reply[i].decode(): _strings(reply[i + 1]) for i in range(0, len(reply), 2)}
            for object_id, reply in zip(ordered, replies, strict=True)
        }
        return acls, groups

    def _replace_permissions(self, object_id: str, replacements: dict[str, set[str]]) -> None:
        args: list[str] = []
        for perm, principals in replacements.items():
            args.extend([perm, str(len(principals)), *sorted(principals)])
        self._run(self._replace, object_id, *args)

    def delete_object_permissions(self, *object_ids: str) -> None:
        if object_ids:
            self._run(self._delete_objects, *dict.fromkeys(object_ids))


def load(config: Any) -> RedisPermission:
    """The backend of ``permission.backend = "redis"``: ``permission.url``
    (default: ``storage.url``, which must then be a Redis URL) and the
    ``redis.*`` settings.

    :raises kiln.exceptions.ConfigError: the driver is missing, or the URL
        is not a Redis URL.
    """
    return RedisPermission(connection_from_config(config, "permission"))
