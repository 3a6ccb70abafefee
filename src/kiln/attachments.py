"""Record attachments, as kinto-attachment serves them.

List ``kiln.attachments`` in the config's ``views`` and name the resources
whose records take a file in ``attachments.resources``; each gets::

    POST   <record path>/attachment   multipart upload: the file in the part
                                      ``attachment``, optional ``data`` and
                                      ``permissions`` parts (JSON), merged
                                      into the record
    DELETE <record path>/attachment   the record's ``attachment`` becomes null

Both go through the record's own permission checks (a ``PATCH`` of the
record, or a ``PUT`` creating it when it does not exist): whoever may write
the record may attach a file to it. The file's metadata is stored in the
record's ``attachment`` field, as kinto-attachment does::

    {"filename": "report.pdf", "mimetype": "application/pdf", "size": 1024,
     "hash": "<sha256 hex>", "location": "<base_url><bucket>/<collection>/<uuid>.pdf"}

Files go to an :class:`AttachmentStorage`: :class:`LocalFileSystem`
(``attachments.base_path``) by default, or the class named by
``attachments.backend`` (``package.module.Class``, built with the app's
configuration), for an object store. A file whose record write fails is
removed; a file no record names any longer (replaced, detached, its record
deleted) is removed once the change committed, unless
``attachments.keep_old_files`` is set. The hello view announces the
``attachments`` capability.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib
import logging
import mimetypes
import os
import re
import uuid
from typing import Any

import orjson
from flask import Flask, Response, request

from kiln._state import add_api_capability, state_of
from kiln.config import Configuration
from kiln.errors import ERRORS, HTTPError, invalid_parameter
from kiln.exceptions import StartupError
from kiln.resource import events
from kiln.resource.views import RecordCall, record_subroute, reply_response

__all__ = ["FIELD", "AttachmentStorage", "LocalFileSystem", "init_app", "load_attachment_storage"]

logger = logging.getLogger("kiln.attachments")

#: The record field holding an attachment's metadata.
FIELD = "attachment"
_PART = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]*\Z")
_EXTENSION = re.compile(r"\.[a-z0-9]{1,16}\Z")
_LOCATION = re.compile(r"(?:[a-zA-Z0-9_][a-zA-Z0-9_-]*/)*[0-9a-f]{32}(?:\.[a-z0-9]{1,16})?\Z")
#: Room for the multipart framing and the ``data``/``permissions`` parts.
_FORM_OVERHEAD = 64 * 1024


class AttachmentStorage(abc.ABC):
    """Where attached files go. ``location`` is a relative path like
    ``bucket/collection/<uuid>.txt``. Built with the app's configuration."""

    def __init__(self, config: Configuration) -> None:
        self.config = config

    @abc.abstractmethod
    def save(self, location: str, content: bytes, mimetype: str) -> None:
        """Store ``content`` at ``location``."""

    @abc.abstractmethod
    def delete(self, location: str) -> None:
        """Remove the file at ``location``; no error when it is gone already."""

    @abc.abstractmethod
    def url(self, location: str) -> str:
        """What the record's ``attachment.location`` shows for ``location``."""

    @abc.abstractmethod
    def locate(self, url: str) -> str | None:
        """The location :meth:`url` made ``url`` from (``None``: not one of ours)."""


class LocalFileSystem(AttachmentStorage):
    """Files below ``attachments.base_path``; their URL is
    ``attachments.base_url`` followed by the location (serve that
    directory with a web server)."""

    def __init__(self, config: Configuration) -> None:
        super().__init__(config)
        self.base_path = os.path.abspath(str(config.setting("attachments.base_path")))
        self.base_url = str(config.setting("attachments.base_url"))

    def _path(self, location: str) -> str:
        return os.path.join(self.base_path, *location.split("/"))

    def save(self, location: str, content: bytes, mimetype: str) -> None:
        path = self._path(location)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fp:
            fp.write(content)

    def delete(self, location: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path(location))

    def url(self, location: str) -> str:
        return self.base_url + location

    def locate(self, url: str) -> str | None:
        if not url.startswith(self.base_url):
            return None
        location = url[len(self.base_url) :]
        return location if _LOCATION.match(location) else None


def load_attachment_storage(config: Configuration) -> AttachmentStorage:
    """The :class:`AttachmentStorage` ``attachments.backend`` names.

    :raises StartupError: the name is neither ``local`` nor an importable
        :class:`AttachmentStorage` subclass.
    """
    name = str(config.setting("attachments.backend"))
    if name == "local":
        return LocalFileSystem(config)
    module_name, _, attribute = name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, AttachmentStorage)):
        raise StartupError(
            f"attachments.backend {name!r} must be 'local' or the dotted path of an "
            "AttachmentStorage subclass, like 'myapp.storage.S3Attachments'."
        )
    storage: AttachmentStorage = cls(config)
    return storage


def init_app(app: Flask) -> None:
    """Give the records of each of ``attachments.resources`` an attachment sub-route."""
    config = state_of(app).config
    names = config.setting("attachments.resources")
    if not names:
        return
    storage = load_attachment_storage(config)
    add_api_capability(
        app,
        "attachments",
        "Add file attachments to records.",
        resources=list(names),
        max_bytes=config.setting("attachments.max_bytes"),
    )

    def view(call: RecordCall) -> Response:
        if request.method == "POST":
            return _attach(call, storage, config)
        return reply_response(call.serve("PATCH", {"data": {FIELD: None}}))

    for name in names:
        record_subroute(app, name, FIELD, view, methods=("POST", "DELETE"))
    if not config.setting("attachments.keep_old_files"):

        def forget_old_files(event: events.ResourceChanged) -> None:
            for impacted in event.impacted_records:
                old = (impacted.get("old") or {}).get(FIELD)
                new = impacted["new"].get(FIELD)
                if isinstance(old, dict) and (
                    not isinstance(new, dict) or new.get("location") != old.get("location")
                ):
                    _forget(storage, old)

        events.subscribe(app, forget_old_files, resources=names)


def _forget(storage: AttachmentStorage, metadata: dict[str, Any]) -> None:
    url = metadata.get("location")
    location = storage.locate(url) if isinstance(url, str) else None
    if location is not None:
        storage.delete(location)


def _json_part(name: str) -> Any:
    raw = request.form.get(name)
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid_parameter("body", name, "must be a JSON object.") from None
    if not isinstance(value, dict):
        raise invalid_parameter("body", name, "must be a JSON object.")
    return value


def _attach(call: RecordCall, storage: AttachmentStorage, config: Configuration) -> Response:
    limit = int(config.setting("attachments.max_bytes"))
    request.max_content_length = limit + _FORM_OVERHEAD
    if request.mimetype != "multipart/form-data":
        raise HTTPError(
            400,
            ERRORS.INVALID_PARAMETERS,
            "Send the file as multipart/form-data, in a part named 'attachment'.",
        )
    upload = request.files.get(FIELD)
    if upload is None or not upload.filename:
        raise invalid_parameter("body", FIELD, "A file part named 'attachment' is required.")
    content = upload.stream.read(limit + 1)
    if len(content) > limit:
        raise HTTPError(413, ERRORS.REQUEST_TOO_LARGE, f"Attachments hold at most {limit} bytes.")
    data = _json_part("data") or {}
    permissions = _json_part("permissions")
    filename = os.path.basename(upload.filename)
    mimetype = upload.mimetype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    # bucket/collection/<uuid>.ext: the parents' ids, each a safe path part.
    parents = call.uri.rsplit("/", 2)[0].strip("/").split("/")[1::2]
    parts = [part if _PART.match(part) else "_" for part in parents]
    extension = os.path.splitext(filename)[1].lower()
    location = "/".join(
        [*parts, uuid.uuid4().hex + (extension if _EXTENSION.match(extension) else "")]
    )
    metadata = {
        "filename": filename,
        "mimetype": mimetype,
        "size": len(content),
        "hash": hashlib.sha256(content).hexdigest(),
        "location": storage.url(location),
    }
    storage.save(location, content, mimetype)
    body: dict[str, Any] = {"data": {**data, FIELD: metadata}}
    if permissions is not None:
        body["permissions"] = permissions
    try:
        try:
            reply = call.serve("PATCH", body)
        except HTTPError as error:
            if error.status != 404:
                raise
            reply = call.serve("PUT", body, {"If-None-Match": "*"})
    except BaseException:
        storage.delete(location)
        raise
    return reply_response(reply)
