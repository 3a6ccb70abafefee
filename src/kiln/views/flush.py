"""``POST /__flush__``: empty storage, permissions and cache (test deployments).

Off unless ``flush_endpoint.enabled`` is set: anyone who can reach the
service can erase everything with it. Kinto's ``kinto.plugins.flush``; its
clients' functional suites end every test with it. Answers ``202 {}``, at
the root and under the version prefix; the hello view announces the
``flush_endpoint`` capability.
"""

from __future__ import annotations

import logging

from flask import Flask, Response

from kiln._state import KilnState, add_api_capability, current_state
from kiln.errors import json_response

__all__ = ["flush", "install_flush"]

logger = logging.getLogger("kiln.flush")


def install_flush(app: Flask, state: KilnState) -> None:
    """Register ``POST /__flush__`` when ``flush_endpoint.enabled`` is set."""
    if not state.config.setting("flush_endpoint.enabled"):
        return
    for base in ("", state.api_prefix):
        app.add_url_rule(f"{base}/__flush__", f"kiln.flush{base}", flush, methods=["POST"])
    add_api_capability(
        app,
        "flush_endpoint",
        "The __flush__ endpoint can be used to remove all data from all backends.",
    )


def flush() -> Response:
    """Remove every record, tombstone, ACE, user principal and cached value."""
    state = current_state()
    for backend in (state.storage, state.permission, state.cache):
        if backend is not None:
            backend.flush()
    logger.warning("Storage, permissions and cache flushed (POST /__flush__).")
    return json_response({}, 202)
