"""Resource events: what changed, delivered after a successful commit.

::

    from kiln.resource import events

    def init_app(app):
        @events.subscribe(app, actions=("create", "delete"), resources=("mushroom",))
        def notify(event: events.ResourceChanged) -> None:
            for change in event.impacted_records:
                ...

A :class:`ResourceChanged` is sent once per ``(resource, parent, action)``
per unit of work (a request, or a whole batch): the records of a batch's
sub-requests are merged into one event. Events are sent only after the
transaction committed; a listener that raises is logged and the others
still run (the data is already committed).

**Before the commit**: ``subscribe(app, fn, before_commit=True)`` calls
``fn(event)`` inside the unit of work, once the request's own writes are
staged and before the flush that commits them. ``event.unit`` is that
:class:`~kiln.resource.unit_of_work.UnitOfWork`: what the listener stages
there (``event.unit.stage_permissions(...)``, writes of a model built on
it) is flushed with the request's writes, in the same transaction, and
their own changes reach the before-commit listeners in turn. A listener
that raises fails the request: nothing of it is committed. Timestamps of
writes not flushed yet read ``0``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln._state import state_of

if TYPE_CHECKING:
    from flask import Flask

    from kiln._state import KilnState
    from kiln.resource.unit_of_work import UnitOfWork

__all__ = [
    "ACTIONS",
    "ResourceChanged",
    "Subscription",
    "before_commit_of",
    "deliver",
    "deliver_before_commit",
    "subscribe",
]

logger = logging.getLogger("kiln.events")

ACTIONS = ("create", "update", "delete")

Listener = Callable[["ResourceChanged"], None]


@dataclass
class ResourceChanged:
    """Records of one resource collection that one unit of work changed.

    ``payload``: ``timestamp`` (the collection's, after the change),
    ``action``, ``uri`` (without the version prefix), ``user_id``,
    ``resource_name``, the path variables, and ``<resource>_id`` when a
    single record changed. ``impacted_records``: ``{"new": ...}`` for
    creates, ``{"new", "old"}`` for updates, ``{"new": tombstone, "old"}``
    for deletes.
    """

    payload: dict[str, Any]
    impacted_records: list[dict[str, Any]] = field(default_factory=list)
    #: The unit of work, for a before-commit listener (``None`` after the commit).
    unit: UnitOfWork | None = field(default=None, repr=False, compare=False)

    @property
    def action(self) -> str:
        return str(self.payload["action"])

    @property
    def resource_name(self) -> str:
        return str(self.payload["resource_name"])


@dataclass(frozen=True)
class Subscription:
    listener: Listener
    actions: frozenset[str] | None
    resources: frozenset[str] | None

    def wants(self, event: ResourceChanged) -> bool:
        return (self.actions is None or event.action in self.actions) and (
            self.resources is None or event.resource_name in self.resources
        )


def subscribe(
    app: Flask,
    listener: Listener | None = None,
    *,
    actions: Iterable[str] | None = None,
    resources: Iterable[str] | None = None,
    before_commit: bool = False,
) -> Any:
    """Call ``listener(event)`` for every :class:`ResourceChanged` of ``app``.

    Usable as ``subscribe(app, fn)`` or as a decorator ``@subscribe(app, ...)``.
    ``actions`` and ``resources`` restrict which events reach it.
    ``before_commit``: call it inside the unit of work, before its commit
    (see the module's docstring), rather than after.

    :raises ValueError: an unknown action.
    """
    wanted = frozenset(actions) if actions is not None else None
    if wanted is not None and not wanted <= set(ACTIONS):
        raise ValueError(f"Unknown actions {sorted(wanted - set(ACTIONS))}; use {ACTIONS}.")

    state = state_of(app)
    subscriptions = state.before_commit if before_commit else state.subscriptions

    def add(fn: Listener) -> Listener:
        subscriptions.append(
            Subscription(fn, wanted, frozenset(resources) if resources is not None else None)
        )
        return fn

    return add(listener) if listener is not None else add


def deliver(
    subscriptions: Sequence[Subscription], events: Sequence[ResourceChanged]
) -> tuple[int, int]:
    """Call the listeners of ``subscriptions`` that want each of ``events``.

    A listener that raises is logged; the others still run (the data is
    already committed). Returns how many calls returned and how many raised.
    """
    delivered = failed = 0
    for event in events:
        for subscription in subscriptions:
            if not subscription.wants(event):
                continue
            try:
                subscription.listener(event)
            except Exception:
                failed += 1
                logger.exception(
                    "Event listener %r failed on %s", subscription.listener, event.action
                )
            else:
                delivered += 1
    return delivered, failed


def deliver_before_commit(
    subscriptions: Sequence[Subscription], events: Sequence[ResourceChanged]
) -> None:
    """Call the before-commit listeners of ``subscriptions`` that want each of
    ``events``; one that raises fails the unit of work."""
    for event in events:
        for subscription in subscriptions:
            if subscription.wants(event):
                subscription.listener(event)


def before_commit_of(state: KilnState) -> Callable[[list[ResourceChanged]], None] | None:
    """What sends an app's events to its before-commit listeners (``None``: it has none)."""
    subscriptions = state.before_commit
    if not subscriptions:
        return None
    return lambda events: deliver_before_commit(subscriptions, events)
