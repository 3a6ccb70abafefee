"""Parsing route docstrings: Clay's directives, without Clay's crashes.

The format of Clay's manual (loosely Sphinx httpdomain)::

    Search for things

    A longer description, any number of lines.

    :query keywords: Words to look for. {"required": true}
    :query limit: How many results; 100 when absent. {"type": "integer"}
    :reqheader Authorization: Basic credentials.
    :status 200: Found
    :status 404: Nothing matched
    :rtype: things.protocol.SearchResults

The first line of text is the summary; the other lines of text are the
description. A line starting with ``:`` is a directive ``:<name> <key>:
<value>``; lines indented under a directive continue its value. Braces in a
value hold JSON metadata: ``required`` (a boolean) and ``type`` (a JSON
Schema type); the rest of the value is the description.

Nothing here raises on a malformed docstring: whatever cannot be read is
skipped and explained in :attr:`Docstring.warnings` (``"line 7: ..."``,
lines counted from the docstring's first line). Sans-IO: text in, values out.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "DIRECTIVES",
    "JSON_TYPES",
    "PARAMETER_DIRECTIVES",
    "Docstring",
    "Parameter",
    "Status",
    "parse_docstring",
]

#: Parameter directives and where the parameter goes (Swagger 1.2's ``paramType``).
PARAMETER_DIRECTIVES = {
    "query": "query",
    "form": "form",
    "body": "body",
    "json": "body",
    "path": "path",
    "reqheader": "header",
}
DIRECTIVES = (*PARAMETER_DIRECTIVES, "status", "rtype")
#: The ``type`` values metadata may give, and the aliases Sphinx users write.
JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object")
_TYPE_ALIASES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_TYPE_ALIASES |= {"list": "array", "dict": "object"}
_METADATA_KEYS = ("required", "type")

_DIRECTIVE = re.compile(r"^:(?P<name>[A-Za-z_][\w-]*)(?P<key>[^:]*):(?P<value>.*)$")
_UNCLOSED = re.compile(r"^:(?P<name>[A-Za-z_][\w-]*)(?:\s+(?P<rest>.*))?$")


@dataclass(frozen=True)
class Parameter:
    """A ``:query``, ``:form``, ``:body``, ``:json``, ``:path`` or ``:reqheader`` line.

    ``location`` is Swagger 1.2's ``paramType`` (``query``, ``form``,
    ``body``, ``path``, ``header``); ``type`` a JSON Schema type or ``None``
    (a string, for query, path and header parameters).
    """

    directive: str
    name: str
    description: str
    required: bool = False
    type: str | None = None

    @property
    def location(self) -> str:
        return PARAMETER_DIRECTIVES[self.directive]


@dataclass(frozen=True)
class Status:
    """A ``:status <code>: <message>`` line."""

    code: int
    message: str


@dataclass(frozen=True)
class Docstring:
    """What a route's docstring says, and what could not be read in it."""

    summary: str = ""
    description: str = ""
    parameters: tuple[Parameter, ...] = ()
    statuses: tuple[Status, ...] = ()
    rtype: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def documented(self) -> bool:
        """Whether there was anything at all to read."""
        return bool(self.summary or self.description or self.parameters or self.statuses) or (
            self.rtype is not None
        )


@dataclass
class _Line:
    number: int
    indent: int
    text: str


class _Parser:
    def __init__(self) -> None:
        self.parameters: list[Parameter] = []
        self.statuses: list[Status] = []
        self.rtype: str | None = None
        self.warnings: list[str] = []

    def warn(self, line: _Line, message: str) -> None:
        self.warnings.append(f"line {line.number}: {message}")

    def directive(self, line: _Line) -> None:
        text = line.text
        match = _DIRECTIVE.match(text)
        if match is not None:
            name = match["name"]
            key = match["key"].strip()
            value = match["value"].strip()
            if name not in DIRECTIVES:
                self.unknown(line, name)
                return
        else:
            loose = _UNCLOSED.match(text)
            if loose is None:
                self.warn(
                    line,
                    f"{_shorten(text)!r} is not a directive: write ':name key: value', "
                    "like ':query limit: How many results'. The line is ignored.",
                )
                return
            name = loose["name"]
            if name not in DIRECTIVES:
                self.unknown(line, name)
                return
            rest = (loose["rest"] or "").strip()
            if name == "rtype":
                key, value = "", rest
                example = f":rtype: {rest or 'module.Model'}"
            else:
                key, _, value = rest.partition(" ")
                example = f":{name} {key or 'name'}: {value or 'description'}"
            self.warn(line, f"':{name}' lacks its closing ':'; write {example!r}.")
        if name == "rtype":
            self.read_rtype(line, key, value)
        elif name == "status":
            self.read_status(line, key, value)
        else:
            self.read_parameter(line, name, key, value)

    def unknown(self, line: _Line, name: str) -> None:
        message = f"unknown directive ':{name}' ignored"
        guesses = difflib.get_close_matches(name, DIRECTIVES, 1, 0.6)
        if guesses:
            message += f"; did you mean ':{guesses[0]}'?"
        else:
            message += f"; known: {', '.join(':' + d for d in DIRECTIVES)}."
        self.warn(line, message)

    def read_rtype(self, line: _Line, key: str, value: str) -> None:
        dotted = value or key
        if key and value:
            self.warn(line, f"write ':rtype: {value}' (':rtype' takes no key); {key!r} ignored.")
        if not dotted:
            self.warn(line, "':rtype:' names no model; write ':rtype: module.Model'.")
            return
        if " " in dotted:
            self.warn(line, f"':rtype: {dotted}' must be one dotted name like 'module.Model'.")
            return
        if self.rtype is not None:
            self.warn(line, f"a second ':rtype:' ({dotted}) ignored; the first one counts.")
            return
        self.rtype = dotted

    def read_status(self, line: _Line, key: str, value: str) -> None:
        if not key.isdigit() or not 100 <= int(key) <= 599:
            self.warn(
                line,
                f"':status{' ' + key if key else ''}:' needs an HTTP status code from 100 to 599, "
                "like ':status 404: Not found'; the line is ignored.",
            )
            return
        code = int(key)
        if any(status.code == code for status in self.statuses):
            self.warn(line, f"status {code} is documented twice; the first one counts.")
            return
        self.statuses.append(Status(code, value))

    def read_parameter(self, line: _Line, directive: str, key: str, value: str) -> None:
        words = key.split()
        if not words:
            self.warn(line, f"':{directive}:' needs a name, like ':{directive} limit: ...'.")
            return
        declared_type: str | None = None
        if len(words) > 2:
            self.warn(
                line, f"':{directive} {key}:' has too many words; write ':{directive} name:'."
            )
            return
        if len(words) == 2:
            # Sphinx's typed form: ``:query int limit:``.
            declared_type = _json_type(words[0])
            if declared_type is None:
                self.warn(
                    line,
                    f"{words[0]!r} is not a type (use one of {', '.join(JSON_TYPES)}); "
                    "it is ignored.",
                )
        name = words[-1]
        description, metadata = self.split_metadata(line, value)
        required = bool(metadata.get("required", False))
        declared_type = metadata.get("type", declared_type)
        if directive == "path":
            if metadata.get("required") is False:
                self.warn(line, f"path parameter {name!r} is always required.")
            required = True
        if any(p.directive == directive and p.name == name for p in self.parameters):
            self.warn(line, f"':{directive} {name}:' appears twice; the first one counts.")
            return
        self.parameters.append(Parameter(directive, name, description, required, declared_type))

    def split_metadata(self, line: _Line, value: str) -> tuple[str, dict[str, Any]]:
        start = value.find("{")
        if start < 0:
            return value, {}
        end = value.rfind("}")
        if end < start:
            self.warn(line, "metadata starts with '{' but has no closing '}'; it is ignored.")
            return value[:start].strip(), {}
        description = " ".join((value[:start] + " " + value[end + 1 :]).split())
        raw = value[start : end + 1]
        try:
            metadata = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.warn(
                line,
                f"metadata {_shorten(raw)} is not valid JSON ({exc}); "
                'write it like {"required": true}.',
            )
            return description, {}
        checked: dict[str, Any] = {}
        for key, item in metadata.items():
            if key not in _METADATA_KEYS:
                self.warn(
                    line,
                    f"unknown metadata key {key!r} ignored; known: {', '.join(_METADATA_KEYS)}.",
                )
            elif key == "required" and not isinstance(item, bool):
                self.warn(line, f'"required" must be true or false, not {_shorten(repr(item))}.')
            elif key == "type" and _json_type(item) is None:
                self.warn(
                    line,
                    f'"type" must be one of {", ".join(JSON_TYPES)}, not {_shorten(repr(item))}.',
                )
            else:
                checked[key] = _json_type(item) if key == "type" else item
        return description, checked


def _json_type(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = _TYPE_ALIASES.get(value, value)
    return value if value in JSON_TYPES else None


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(docstring: str) -> list[_Line]:
    lines = []
    for number, raw in enumerate(inspect.cleandoc(docstring).splitlines(), start=1):
        expanded = raw.expandtabs()
        text = expanded.strip()
        lines.append(_Line(number, len(expanded) - len(expanded.lstrip()), text))
    return lines


def parse_docstring(docstring: str | None) -> Docstring:
    """Read a route's docstring; never raises.

    >>> doc = parse_docstring('''Get a thing
    ...
    ...     :path thing_id: Which thing. {"required": true}
    ...     :status 404: No such thing
    ... ''')
    >>> doc.summary, doc.parameters[0].required, doc.statuses[0].code
    ('Get a thing', True, 404)
    """
    if not docstring or not docstring.strip():
        return Docstring()
    parser = _Parser()
    text: list[str] = []
    lines = _lines(docstring)
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.text.startswith(":"):
            text.append(line.text if not text else " " * line.indent + line.text)
            continue
        # Lines indented deeper than a directive continue its value.
        while (
            index < len(lines)
            and lines[index].text
            and not lines[index].text.startswith(":")
            and lines[index].indent > line.indent
        ):
            line.text += " " + lines[index].text
            index += 1
        parser.directive(line)
    while text and not text[0].strip():
        text.pop(0)
    summary = text[0].strip() if text else ""
    description = "\n".join(line.rstrip() for line in text[1:]).strip("\n")
    return Docstring(
        summary=summary,
        description=inspect.cleandoc(description) if description.strip() else "",
        parameters=tuple(parser.parameters),
        statuses=tuple(parser.statuses),
        rtype=parser.rtype,
        warnings=tuple(parser.warnings),
    )
