"""Models named by ``:rtype:`` in the docs tests (the manual's ``things.protocol``)."""
