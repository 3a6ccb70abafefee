"""``clay.stats``: kiln's statsd client (:mod:`kiln.stats`) under Clay's name."""

from __future__ import annotations

from kiln.stats import Timer, connection, count, gauge, send, timing, unique_set, wrapper

__all__ = ["Timer", "connection", "count", "gauge", "send", "timing", "unique_set", "wrapper"]
