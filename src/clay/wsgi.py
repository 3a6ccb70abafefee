"""``gunicorn clay.wsgi:application``: kiln's WSGI entry point under Clay's name."""

from __future__ import annotations

from kiln.wsgi import application

__all__ = ["application"]
