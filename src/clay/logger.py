"""``clay.logger``: the remote log handlers (``class: clay.logger.UDPHandler``)."""

from __future__ import annotations

from kiln.logging import TCPHandler, UDPHandler

__all__ = ["TCPHandler", "UDPHandler"]
