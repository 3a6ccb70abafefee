"""`make test-all`: kiln's suite on every Python it supports, one nox session each.

    make test-all                     # all three, one after the other
    make test-all NOX_ARGS="-s tests-3.13 -- -x tests/test_cli.py"

Each session installs the development extras at the versions of
constraints.txt into its own venv under .nox/, then runs pytest (no coverage:
`make test` measures it, on the Python of .venv). Pythons come from PATH;
`make test-all` puts pyenv's 3.11, 3.12 and 3.13 there. A missing one fails.
"""

from __future__ import annotations

import nox

nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]


@nox.session(python=["3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    session.install("-c", "constraints.txt", "-e", ".[dev,loadtest]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)
