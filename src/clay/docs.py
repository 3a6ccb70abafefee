"""``clay.docs``: listing it in ``views`` serves Clay's ``/_docs`` (:mod:`kiln.docs`)."""

from __future__ import annotations

from kiln.docs import init_app

__all__ = ["init_app"]
