"""A Kinto-compatible storage service built with kiln's public API (``docs/kinto.md``)."""
