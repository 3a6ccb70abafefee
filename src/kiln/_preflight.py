"""What kiln checks of the configured backends before they serve.

Two moments:

- every validation of a config (startup, reload, ``kiln check``) runs
  :func:`sqlite_url_problems`: the SQLite backends take a file path, so a
  SQLAlchemy URL (``sqlite:///file.db``), a server URL left beside the
  default backend, or a file in a directory that does not exist is refused
  in one sentence that shows the right form;
- ``kiln check`` runs :func:`probe`: it opens each backend the app built
  (the SQLite file, the PostgreSQL server and database, the Redis server)
  and reads its schema version, writing nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kiln.config import SETTINGS, lookup, register_check
from kiln.exceptions import KilnError

__all__ = ["Backend", "Report", "backends", "probe", "sqlite_url_problems"]

#: The backend kinds, in the order they are built and migrated.
KINDS = ("storage", "permission", "cache")

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
#: Backends whose URLs a scheme names.
_SCHEME_BACKENDS = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "redis": "redis",
    "rediss": "redis",
}


@dataclass(frozen=True)
class Backend:
    """The backend a config chooses for one kind, and the keys that chose it.

    ``cache`` and ``permission`` default to the storage's backend and URL,
    as their loaders do; ``backend_key`` and ``url_key`` name the keys that
    decided (``storage.url`` when ``cache.url`` is unset).
    """

    kind: str
    name: str
    url: Any
    backend_key: str
    url_key: str


def _default(key: str) -> Any:
    return SETTINGS[key].default


def backends(tree: Mapping[str, Any]) -> dict[str, Backend]:
    """The backend of each kind that ``tree`` configures, by kind."""
    storage = Backend(
        "storage",
        lookup(tree, "storage.backend", _default("storage.backend")),
        lookup(tree, "storage.url", _default("storage.url")),
        "storage.backend",
        "storage.url",
    )
    chosen = {"storage": storage}
    for kind in KINDS[1:]:
        name, url = lookup(tree, f"{kind}.backend"), lookup(tree, f"{kind}.url")
        chosen[kind] = Backend(
            kind,
            name or storage.name,
            url or storage.url,
            f"{kind}.backend" if name else storage.backend_key,
            f"{kind}.url" if url else storage.url_key,
        )
    return chosen


def sqlite_url_problems(tree: Mapping[str, Any], origins: Mapping[str, str]) -> list[str]:
    """One sentence per SQLite backend whose URL the backend would misread."""
    problems: dict[str, str] = {}
    for backend in backends(tree).values():
        if backend.name != "sqlite" or not isinstance(backend.url, str):
            continue
        problem = _sqlite_url_problem(backend)
        if problem and backend.url_key not in problems:
            where = origins.get(backend.url_key)
            problems[backend.url_key] = (
                f"Config key {backend.url_key!r}{f' (set in {where})' if where else ''} {problem}"
            )
    return list(problems.values())


def _sqlite_url_problem(backend: Backend) -> str | None:
    url = backend.url
    match = _URL.match(url)
    scheme = match.group(1).lower() if match else ""
    if url == ":memory:" or scheme == "file":
        return None  # SQLite's own forms: its URI filenames (file:data.db?mode=ro) are its business
    if scheme.startswith("sqlite"):
        return (
            f"is a SQLAlchemy URL ({url!r}), but kiln's SQLite backend takes a file path: "
            f"write `{backend.url_key}: {_sqlite_path(url)}`."
        )
    if match and url[match.end() :].startswith("//"):
        name = _SCHEME_BACKENDS.get(scheme)
        fix = f"set `{backend.backend_key}: {name}`" if name else "give it a file path"
        # The URL itself is left out: it may hold a password.
        return f"is a {scheme}:// URL, but the {backend.kind} backend is 'sqlite': {fix}."
    directory = os.path.dirname(os.path.abspath(url))
    if not os.path.isdir(directory):
        return (
            f"names the SQLite file {url!r} in {directory!r}, a directory that does not "
            "exist: create it, or choose another path."
        )
    return None


def _sqlite_path(url: str) -> str:
    """The file path of a SQLAlchemy ``sqlite://`` URL (``sqlite:///a.db`` -> ``a.db``)."""
    rest = url.split("://", 1)[1] if "://" in url else url.split(":", 1)[1]
    path = rest.split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path
    return path or ":memory:"


register_check(sqlite_url_problems)


# --------------------------------------------------------------------------
# kiln check
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """What :func:`probe` found of one backend: a sentence, and whether it is a problem."""

    kind: str
    backend: str
    sentence: str
    ok: bool

    def __str__(self) -> str:
        return f"{self.kind} ({self.backend}): {self.sentence}"


def probe(
    built: Mapping[str, Any], tree: Mapping[str, Any], *, schema_at_startup: bool
) -> list[Report]:
    """Open each backend in ``built`` (kind -> backend) and read its schema version.

    Nothing is written: a SQLite file that does not exist yet is not opened
    (opening would create it). ``schema_at_startup`` tells whether the
    server will create missing tables itself (``storage.initialize_on_startup``);
    otherwise a missing schema is a problem to fix with ``kiln migrate``.
    """
    reports = []
    for kind, backend in backends(tree).items():
        if kind in built:
            reports.append(_probe_one(built[kind], backend, schema_at_startup))
    return reports


def _probe_one(instance: Any, backend: Backend, schema_at_startup: bool) -> Report:
    def report(sentence: str, ok: bool = True) -> Report:
        return Report(backend.kind, backend.name, sentence, ok)

    if backend.name == "memory":
        return report("in this process's memory, nothing to open.")
    if backend.name == "sqlite" and backend.url != ":memory:" and not os.path.exists(backend.url):
        if schema_at_startup:
            return report(f"the file {backend.url!r} will be created at startup.")
        return report(
            f"the file {backend.url!r} does not exist and storage.initialize_on_startup "
            "is false: create it with `kiln migrate`.",
            ok=False,
        )
    try:
        steps = instance.initialize_schema(dry_run=True)
    except KilnError as exc:
        return report(str(exc), ok=False)
    if not steps:
        return report("ready.")
    if schema_at_startup:
        return report("answers; its schema will be created at startup.")
    return report(
        f"answers, but its schema is not up to date ({len(steps)} steps missing, from "
        f"'{steps[0]}'): run `kiln migrate`.",
        ok=False,
    )
