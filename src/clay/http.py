"""``clay.http``: kiln's HTTP client (:mod:`kiln.http`) under Clay's name."""

from __future__ import annotations

from kiln.http import Response, cache_control, request

__all__ = ["Response", "cache_control", "request"]
