"""Declare a resource in a few lines; get a complete, sync-capable REST API.

::

    from kiln import resource

    @resource.register()
    class Mushroom(resource.Resource):
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "edible": {"type": "boolean"}},
            "required": ["name"],
        }
        unique_fields = ("name",)

A module listing resources goes in the config's ``views``; ``create_app``
mounts each one at ``/v<N>/mushrooms`` and ``/v<N>/mushrooms/<id>`` with the
whole protocol of ``docs/protocol.md``: filters, sorting, pagination,
``_since`` sync with tombstones, ETag preconditions, PATCH in three media
types, batch, events.

The layers (ARCHITECTURE D6): :mod:`kiln.resource.query` (query strings and
tokens), :mod:`kiln.resource.schema` (JSON Schema), :mod:`kiln.resource.model`
(the protocol's semantics over storage) are sans-IO; only
:mod:`kiln.resource.views` and :mod:`kiln.resource.batch` touch Flask.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from kiln.exceptions import StartupError
from kiln.resource.schema import Schema
from kiln.storage import INDEX_TYPES, Index, IndexedField

__all__ = [
    "COLLECTION_METHODS",
    "RECORD_METHODS",
    "UUID4",
    "IdGenerator",
    "Registration",
    "RequestContext",
    "Resource",
    "ShareableResource",
    "Slug",
    "UserResource",
    "nested_parent_id",
    "register",
    "registrations",
]

COLLECTION_METHODS = ("GET", "HEAD", "POST", "DELETE")
RECORD_METHODS = ("GET", "HEAD", "PUT", "PATCH", "DELETE")

R = TypeVar("R", bound=type["Resource"])


class IdGenerator:
    """Makes record ids; ``regexp`` says which ids (from URLs or bodies) are valid.

    Subclass it and override :meth:`__call__` and ``regexp``; every id the
    generator makes must match its ``regexp``.
    """

    regexp = r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$"

    def __init__(self) -> None:
        # ``\Z``: ``$`` alone also matches before a final newline ("abc\n").
        self.pattern = re.compile(rf"(?:{self.regexp})\Z")
        sample = self()
        if not self.pattern.match(sample):
            raise StartupError(
                f"{type(self).__name__} made the id {sample!r}, which its own regexp "
                f"{self.regexp!r} refuses."
            )

    def __call__(self) -> str:
        return uuid.uuid4().hex

    def match(self, object_id: str) -> bool:
        """Whether ``object_id`` is a valid id for this generator."""
        return bool(self.pattern.match(object_id))


class UUID4(IdGenerator):
    """Random UUID4 ids in their canonical lower-case form (the default)."""

    regexp = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"

    def __call__(self) -> str:
        return str(uuid.uuid4())


class Slug(IdGenerator):
    """Generated ids are UUID4 hex; any ``[a-zA-Z0-9][a-zA-Z0-9_-]*`` id is accepted.

    For resources whose clients choose readable ids (``PUT /articles/hello-world``).
    """


@dataclass(frozen=True)
class RequestContext:
    """What the sans-IO layers know of a request: path variables and the caller."""

    path: dict[str, str]
    user_id: str | None = None
    principals: Sequence[str] = ()


class Resource:
    """Base class of declared resources. Override the class attributes and hooks.

    ``schema``
        JSON Schema dict, pydantic model class, or ``None`` (schemaless).
    ``unique_fields``
        Fields whose non-null values are unique in a collection (409 on PUT/PATCH).
    ``readonly_fields``
        Fields a PUT or PATCH may not change (400).
    ``id_generator``
        An :class:`IdGenerator` class (default :class:`UUID4`).
    ``indexes``
        Indexes of the collections, for the lists clients ask most: each a
        tuple of top-level fields, ``-`` before one sorted descending, like
        ``("edible", "-size")`` for ``?edible=true&_sort=-size``. Each field
        must have one scalar type in the schema (number, integer, boolean or
        string). The PostgreSQL backend creates them (``kiln migrate``) and
        reads lists filtered on the first fields and sorted on the next ones
        in index order; see ``docs/resource.md``.
    """

    #: Who may do what (:mod:`kiln.resource.access`): ``public`` here,
    #: ``private`` for :class:`UserResource`, ``shareable`` for
    #: :class:`ShareableResource`.
    kind: ClassVar[str] = "public"
    name: ClassVar[str | None] = None
    schema: ClassVar[Any] = None
    unique_fields: ClassVar[Sequence[str]] = ()
    readonly_fields: ClassVar[Sequence[str]] = ()
    id_generator: ClassVar[type[IdGenerator]] = UUID4
    indexes: ClassVar[Sequence[Sequence[str]]] = ()

    def process_record(self, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Hook run on every create and update, after validation; returns the record to store."""
        return new

    def get_parent_id(self, context: RequestContext) -> str:
        """The collection's ``parent_id``: ``""`` (one shared collection) by default.

        Nested resources get the URI of their parent record.
        """
        return nested_parent_id(context)


class UserResource(Resource):
    """Records private to each user: every request must be authenticated, and
    each user reads and writes a collection of their own (its ``parent_id``
    is the user id), so nobody ever sees another user's records. A ``PUT``
    on an id another user holds creates the record in the caller's own
    collection.
    """

    kind = "private"

    def get_parent_id(self, context: RequestContext) -> str:
        if context.user_id is None:
            # The views answer 401 before; never fall back to a shared collection.
            from kiln.errors import ERRORS, HTTPError

            raise HTTPError(
                401, ERRORS.MISSING_AUTH_TOKEN, "Please authenticate yourself to use this endpoint."
            )
        return context.user_id


class ShareableResource(Resource):
    """Records shared by permissions: each record has ``read`` and ``write``
    permissions (and ``<child>:create`` for resources nested below it) in its
    request and response bodies; the creator always gets ``write``; lists
    show only what the caller may read. See :mod:`kiln.resource.access`.
    """

    kind = "shareable"


def nested_parent_id(context: RequestContext) -> str:
    """The parent URI built from the path variables other than ``id``."""
    parts = [(key, value) for key, value in context.path.items() if key != "id"]
    return "".join(f"/{key.removesuffix('_id')}s/{value}" for key, value in parts)


@dataclass(frozen=True)
class Registration:
    """A registered resource: its class, name, paths, methods and compiled schema."""

    cls: type[Resource]
    name: str
    collection_path: str
    record_path: str
    collection_methods: tuple[str, ...]
    record_methods: tuple[str, ...]
    schema: Schema
    id_generator: IdGenerator
    indexes: tuple[Index, ...] = ()

    @property
    def module(self) -> str:
        return self.cls.__module__


_REGISTRY: dict[str, list[Registration]] = {}
_PATH_VARIABLE = re.compile(r"\{(\w+)\}")


def _flask_path(path: str) -> str:
    """Cliquet's ``{var}`` path syntax as Flask's ``<var>``."""
    if not path.startswith("/"):
        raise StartupError(f"Resource path {path!r} must start with '/'.")
    variables = _PATH_VARIABLE.findall(path)
    if any(char in _PATH_VARIABLE.sub("", path) for char in "{}<>"):
        raise StartupError(
            f"Resource path {path!r}: write path variables as {{name}}, "
            "with letters, digits and underscores."
        )
    if len(set(variables)) != len(variables):
        raise StartupError(f"Resource path {path!r} names a path variable twice.")
    return _PATH_VARIABLE.sub(r"<\1>", path)


def _indexes(resource_name: str, declared: Any, schema: Schema) -> tuple[Index, ...]:
    """The ``indexes`` of a resource, checked against its schema."""
    if isinstance(declared, str) or not isinstance(declared, Sequence):
        raise StartupError(
            f"Resource {resource_name!r}: indexes is a tuple of field tuples, like "
            '(("edible", "-size"),).'
        )
    indexes = []
    for entry in declared:
        if isinstance(entry, str) or not isinstance(entry, Sequence) or not entry:
            raise StartupError(
                f"Resource {resource_name!r}: each index is a non-empty tuple of fields, "
                f'like ("edible", "-size"), not {entry!r}.'
            )
        fields = []
        for spec in entry:
            name = spec.removeprefix("-") if isinstance(spec, str) else ""
            kind = schema.field_type(name) if name else None
            if kind not in INDEX_TYPES:
                raise StartupError(
                    f"Resource {resource_name!r}: the indexed field {spec!r} must be a "
                    "top-level property whose schema type is one of "
                    f"{', '.join(INDEX_TYPES)}."
                )
            fields.append(IndexedField(name, kind, -1 if spec.startswith("-") else 1))
        indexes.append(Index(resource_name, tuple(fields)))
    return tuple(indexes)


def register(
    name: str | None = None,
    collection_path: str | None = None,
    record_path: str | None = None,
    collection_methods: Sequence[str] = COLLECTION_METHODS,
    record_methods: Sequence[str] = RECORD_METHODS,
) -> Callable[[R], R]:
    """Class decorator: declare a resource.

    :param name: default: the class's ``name`` attribute, else its lower-cased name.
    :param collection_path: default ``/{name}s``; may hold parent variables
        (``/buckets/{bucket_id}/collections``).
    :param record_path: default ``<collection_path>/{id}``.
    :param collection_methods: the methods the collection endpoint answers.
    :param record_methods: the methods the record endpoint answers.
    :raises StartupError: a wrong schema, path or method.
    """

    def decorate(cls: R) -> R:
        resource_name = name or cls.name or cls.__name__.lower()
        collection = collection_path or f"/{resource_name}s"
        record = record_path or f"{collection}/{{id}}"
        if cls.kind not in ("public", "private", "shareable"):
            raise StartupError(
                f"Resource {resource_name!r}: kind {cls.kind!r} is not one of "
                "'public', 'private' (UserResource), 'shareable' (ShareableResource)."
            )
        if "{id}" not in record:
            raise StartupError(f"Resource {resource_name!r}: record_path must contain '{{id}}'.")
        if "{id}" in collection:
            raise StartupError(
                f"Resource {resource_name!r}: collection_path may not contain '{{id}}'; "
                "name a parent's variable after it ('{bucket_id}')."
            )
        for methods, allowed in (
            (collection_methods, COLLECTION_METHODS),
            (record_methods, RECORD_METHODS),
        ):
            if isinstance(methods, str):
                raise StartupError(
                    f"Resource {resource_name!r}: methods are a tuple like ('GET', 'POST'), "
                    f"not the string {methods!r}."
                )
            unknown = set(methods) - set(allowed)
            if unknown:
                raise StartupError(
                    f"Resource {resource_name!r}: unknown methods {sorted(unknown)}; "
                    f"choose among {', '.join(allowed)}."
                )
        schema = Schema.compile(cls.schema, resource_name)
        registration = Registration(
            cls=cls,
            name=resource_name,
            collection_path=_flask_path(collection),
            record_path=_flask_path(record),
            collection_methods=tuple(collection_methods),
            record_methods=tuple(record_methods),
            schema=schema,
            id_generator=cls.id_generator(),
            indexes=_indexes(resource_name, cls.indexes, schema),
        )
        modules = _REGISTRY.setdefault(cls.__module__, [])
        # A name registered again (a module reloaded, a class redefined) is replaced.
        modules[:] = [r for r in modules if r.name != resource_name]
        modules.append(registration)
        return cls

    return decorate


def registrations(module: str) -> list[Registration]:
    """The resources registered by ``module``, in declaration order."""
    return list(_REGISTRY.get(module, ()))
