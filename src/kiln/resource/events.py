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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln._state import state_of

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["ACTIONS", "ResourceChanged", "Subscription", "deliver", "notify", "subscribe"]

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


def _subscriptions(app: Flask) -> list[Subscription]:
    return state_of(app).subscriptions


def subscribe(
    app: Flask,
    listener: Listener | None = None,
    *,
    actions: Iterable[str] | None = None,
    resources: Iterable[str] | None = None,
) -> Any:
    """Call ``listener(event)`` for every :class:`ResourceChanged` of ``app``.

    Usable as ``subscribe(app, fn)`` or as a decorator ``@subscribe(app, ...)``.
    ``actions`` and ``resources`` restrict which events reach it.

    :raises ValueError: an unknown action.
    """
    wanted = frozenset(actions) if actions is not None else None
    if wanted is not None and not wanted <= set(ACTIONS):
        raise ValueError(f"Unknown actions {sorted(wanted - set(ACTIONS))}; use {ACTIONS}.")

    def add(fn: Listener) -> Listener:
        _subscriptions(app).append(
            Subscription(fn, wanted, frozenset(resources) if resources is not None else None)
        )
        return fn

    return add(listener) if listener is not None else add


def notify(app: Flask, events: Sequence[ResourceChanged]) -> None:
    """Deliver ``events`` to the app's subscribers (after commit)."""
    deliver(state_of(app).subscriptions, events)


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
