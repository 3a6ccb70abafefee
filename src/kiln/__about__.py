"""The single source of kiln's version."""

__version__ = "0.1.0"
