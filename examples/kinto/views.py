"""Kinto's resources in kiln: buckets, groups, collections and records.

Serve it from the repository's root::

    KILN_CONFIG=examples/kinto/config.yaml kiln serve -p 8888

Everything else Kinto's clients use is kiln's own, switched on in
``config.yaml``: accounts (``auth.policies: [accounts]``), batch, the
permissions endpoint, attachments (``kiln.attachments``), flush for tests.
What this module adds is Kinto's URL layout and one rule: the members of a
group hold the group's URI as a principal, changed in the same unit of
work as the group.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Flask

from kiln import resource
from kiln.permission import PermissionBase
from kiln.resource import events

GROUP_SCHEMA = {
    "type": "object",
    "properties": {"members": {"type": "array", "items": {"type": "string"}}},
}


class RelaxedUUID(resource.IdGenerator):
    """Kinto's record ids: generated as UUID4, any slug accepted from clients."""

    def __call__(self) -> str:
        return str(uuid.uuid4())


@resource.register()
class Bucket(resource.ShareableResource):
    id_generator = resource.Slug


@resource.register(collection_path="/buckets/{bucket_id}/groups")
class Group(resource.ShareableResource):
    schema = GROUP_SCHEMA
    id_generator = resource.Slug

    def process_record(self, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        new.setdefault("members", [])
        return new


@resource.register(collection_path="/buckets/{bucket_id}/collections")
class Collection(resource.ShareableResource):
    id_generator = resource.Slug


@resource.register(collection_path="/buckets/{bucket_id}/collections/{collection_id}/records")
class Record(resource.ShareableResource):
    id_generator = RelaxedUUID


def members_become_principals(event: events.ResourceChanged) -> None:
    """Give each member of a written group the group's URI as a principal,
    and take it from those who left (all of them when it is deleted)."""
    assert event.unit is not None  # a before-commit listener
    for impacted in event.impacted_records:
        old, new = impacted.get("old") or {}, impacted["new"]
        group = f"/buckets/{event.payload['bucket_id']}/groups/{new['id']}"
        before = set(old.get("members", []))
        after = set() if new.get("deleted") else set(new.get("members", []))

        def change(
            backend: PermissionBase,
            group: str = group,
            gone: set[str] = before - after,
            added: set[str] = after - before,
        ) -> None:
            for member in gone:
                backend.remove_user_principal(member, group)
            for member in added:
                backend.add_user_principal(member, group)

        event.unit.stage_permissions((), change)


def groups_go_with_their_bucket(event: events.ResourceChanged) -> None:
    """Deleting a bucket deletes its groups (a cascade, which sends no events
    of its own): take each group's principal from every user."""
    assert event.unit is not None
    assert event.unit.storage is not None
    buckets = [f"/buckets/{impacted['new']['id']}" for impacted in event.impacted_records]
    # The cascade's deletes are staged, not flushed: the groups still read as live.
    groups = [
        f"{parent_id}/groups/{group_id}"
        for resource_name, parent_id, group_id in event.unit.storage.list_descendants(buckets)
        if resource_name == "group"
    ]

    def change(backend: PermissionBase) -> None:
        for group in groups:
            backend.remove_principal(group)

    if groups:
        event.unit.stage_permissions((), change)


def init_app(app: Flask) -> None:
    events.subscribe(app, members_become_principals, resources=("group",), before_commit=True)
    events.subscribe(
        app,
        groups_go_with_their_bucket,
        actions=("delete",),
        resources=("bucket",),
        before_commit=True,
    )
