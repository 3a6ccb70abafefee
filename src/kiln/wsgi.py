"""The WSGI entry point: ``gunicorn kiln.wsgi:application``.

Importing this module builds the process-wide app from ``KILN_CONFIG`` (or
``CLAY_CONFIG``). A configuration or startup error is printed as one
sentence and the worker exits with gunicorn's boot-error code (3), so the
arbiter stops instead of restarting a worker that can never start.
"""

from __future__ import annotations

import sys

from kiln.application import get_app
from kiln.exceptions import KilnError

__all__ = ["application"]

WORKER_BOOT_ERROR = 3

try:
    application = get_app()
except KilnError as exc:
    sys.stderr.write(f"kiln: cannot start: {exc}\n")
    raise SystemExit(WORKER_BOOT_ERROR) from None
