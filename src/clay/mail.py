"""``clay.mail``: :func:`kiln.mail.sendmail` under Clay's name."""

from __future__ import annotations

from kiln.mail import sendmail

__all__ = ["sendmail"]
