"""What the contract suites of the storage, permission and cache backends share.

:class:`BackendContract` is the base of
:class:`~kiln.storage.testing.StorageContract`,
:class:`~kiln.permission.testing.PermissionContract` and
:class:`~kiln.cache.testing.CacheContract`: the ``backend`` fixture each
implementation's test class overrides, the optional ``broken_backend``,
the ``ready`` backend the tests use (schema installed, emptied, closed
afterwards), the ``transactional`` one, and the lifecycle tests every kind
runs; and the hypothesis settings of their property tests
(:func:`property_settings`). Needs ``pytest`` and ``hypothesis``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings

__all__ = ["BackendContract", "property_settings"]

F = TypeVar("F", bound=Callable[..., Any])


def property_settings(max_examples: int) -> Callable[[F], F]:
    """Hypothesis settings of a contract's property test (``@given``), which
    each backend's test class runs with its own fixtures."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            # Each backend's subclass runs this one method: that is the point.
            HealthCheck.differing_executors,
        ],
    )


class BackendContract:
    """The fixtures and lifecycle tests of every contract suite."""

    @pytest.fixture
    def backend(self) -> Any:
        raise NotImplementedError("Override the backend fixture with a fresh backend.")

    @pytest.fixture
    def broken_backend(self) -> Any:
        pytest.skip("This backend declares no way to make its engine fail.")

    @pytest.fixture
    def ready(self, backend: Any) -> Iterator[Any]:
        """``backend`` with its schema installed and nothing in it; closed after the test."""
        backend.initialize_schema()
        backend.flush()
        yield backend
        backend.close()

    @pytest.fixture
    def transactional(self, ready: Any) -> Any:
        """The ready backend, for tests of units of work (skipped without them)."""
        if not ready.supports_transactions:
            pytest.skip("The backend declares supports_transactions = False.")
        return ready

    def test_initialize_schema_is_idempotent(self, ready: Any) -> None:
        assert ready.initialize_schema() == []
        assert ready.initialize_schema(dry_run=True) == []

    def test_heartbeat_answers_true(self, ready: Any) -> None:
        assert ready.heartbeat() is True
