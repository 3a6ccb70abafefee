"""Kinto beside kiln: its own virtualenv, its config for PostgreSQL, its schema.

::

    .venv/bin/python bench/kinto_env.py                  # create/refresh bench/.kinto-venv
    .venv/bin/python bench/kinto_env.py --ini /tmp/kinto.ini \\
        --postgresql-url postgresql://postgres@127.0.0.1:5432/kiln_bench_kinto

The first form creates ``bench/.kinto-venv`` (gitignored) and installs
``kinto[postgresql]`` at :data:`KINTO_VERSION` and gunicorn at
:data:`GUNICORN_VERSION` (kiln's own gunicorn), from PyPI, then prints the
versions installed. It does nothing when they are already there. The second
also writes a Kinto ini file for that database (storage, permissions and cache
on PostgreSQL, ``basicauth``) and runs ``kinto migrate`` on it.

``bench/resources.py --targets ...,kinto`` calls the same functions.

Kinto lives in its own virtualenv because its dependencies (Pyramid,
SQLAlchemy, psycopg2) are not kiln's. The ini is Kinto's own template
(``kinto init``) trimmed to what the benchmark needs:

- storage, permission and cache backends on PostgreSQL, one database;
- ``basicauth`` as the only authentication policy (any ``user:password``
  pair is a user, ``basicauth:<HMAC of the pair>``, as in kiln) and no
  plugin (no accounts, no admin UI, no default bucket); authenticated users
  may create buckets, and the bench user owns the bench bucket, its
  collection and every record (``write`` ACEs), as Kinto itself writes them;
- ``kinto.experimental_collection_schema_validation = true``, so records
  are checked against the collection's JSON Schema (kiln validates too);
- the connection pools sized to gunicorn's threads;
- Kinto's JSON (mozlog) log lines at ``log_level``: ``INFO`` writes one
  request-summary line per request, as Kinto's production docs configure
  it; the benchmark uses ``WARNING`` (no summary line) unless told otherwise,
  and configures kiln the same way.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".kinto-venv"
KINTO_VERSION = "26.5.0"
GUNICORN_VERSION = "27.0.1"
REQUIREMENTS = (f"kinto[postgresql]=={KINTO_VERSION}", f"gunicorn=={GUNICORN_VERSION}")

INI_TEMPLATE = """\
# Kinto {kinto_version} for bench/resources.py (written by bench/kinto_env.py).

[app:main]
use = egg:kinto
kinto.includes =
kinto.userid_hmac_secret = {secret}
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated
kinto.experimental_collection_schema_validation = true
kinto.batch_max_requests = 25

kinto.storage_backend = kinto.core.storage.postgresql
kinto.storage_url = {url}
kinto.storage_pool_size = {pool_size}
kinto.permission_backend = kinto.core.permission.postgresql
kinto.permission_url = {url}
kinto.permission_pool_size = {pool_size}
kinto.cache_backend = kinto.core.cache.postgresql
kinto.cache_url = {url}
kinto.cache_pool_size = {pool_size}

[loggers]
keys = root, kinto

[handlers]
keys = console

[formatters]
keys = json

[logger_root]
level = {log_level}
handlers = console

[logger_kinto]
level = {log_level}
handlers = console
qualname = kinto
propagate = 0

[handler_console]
class = kinto.core.StreamHandlerWithRequestID
args = (sys.stderr,)
level = NOTSET
formatter = json

[formatter_json]
class = kinto.core.JsonLogFormatter
"""


def python() -> Path:
    return VENV / "bin" / "python"


def installed_versions() -> dict[str, str]:
    """``{"kinto": ..., "gunicorn": ..., ...}`` in the venv; empty when there is none."""
    if not python().exists():
        return {}
    script = (
        "import importlib.metadata as m, json\n"
        "names = ['kinto', 'gunicorn', 'SQLAlchemy', 'psycopg2-binary', 'pyramid', 'jsonschema']\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(python()), "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        return {}
    import json

    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def ensure_venv(quiet: bool = False) -> dict[str, str]:
    """Create ``bench/.kinto-venv`` with Kinto and gunicorn if needed; their versions."""
    versions = installed_versions()
    if versions.get("kinto") == KINTO_VERSION and versions.get("gunicorn") == GUNICORN_VERSION:
        return versions
    if not python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    command = [str(python()), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        command.append("--quiet")
    done = subprocess.run([*command, *REQUIREMENTS], check=False, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(
            f"Installing {' '.join(REQUIREMENTS)} into {VENV} failed (pip exit "
            f"{done.returncode}, output above). Check that PyPI is reachable, or run "
            f"without Kinto: --targets kiln,floor."
        )
    versions = installed_versions()
    if versions.get("kinto") != KINTO_VERSION:
        raise SystemExit(f"Kinto {KINTO_VERSION} is not importable from {VENV}: {versions}")
    return versions


def write_ini(
    path: Path,
    url: str,
    pool_size: int = 4,
    secret: str | None = None,
    log_level: str = "INFO",
) -> Path:
    """A Kinto ini for the PostgreSQL database ``url`` (storage, permissions, cache).

    ``secret`` keys ``basicauth``'s HMAC (a random one by default).
    """
    path.write_text(
        INI_TEMPLATE.format(
            kinto_version=KINTO_VERSION,
            secret=secret or secrets.token_hex(32),
            url=url,
            pool_size=pool_size,
            log_level=log_level,
        )
    )
    return path


def migrate(ini: Path) -> None:
    """``kinto migrate --ini <ini>``: create Kinto's tables in its database."""
    done = subprocess.run(
        [str(VENV / "bin" / "kinto"), "migrate", "--ini", str(ini)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=ini.parent,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise SystemExit(f"kinto migrate failed:\n{done.stdout}{done.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ini", type=Path, help="write a Kinto ini file here and migrate")
    parser.add_argument("--postgresql-url", help="the database of --ini")
    args = parser.parse_args(argv)
    versions = ensure_venv()
    print(f"{VENV}: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    if args.ini:
        if not args.postgresql_url:
            parser.error("--ini needs --postgresql-url")
        migrate(write_ini(args.ini, args.postgresql_url))
        print(f"wrote {args.ini} and migrated {args.postgresql_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
