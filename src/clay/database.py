"""``clay.database``: kiln's ``read``/``write`` contexts (:mod:`kiln.database`)."""

from __future__ import annotations

from kiln.database import read, write

__all__ = ["read", "write"]
