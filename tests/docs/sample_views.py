"""Routes whose docstrings use every directive of Clay's manual, and break them."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify


def search() -> Any:
    """
    Search for things

    This is an example of a search endpoint that takes query string
    parameters to limit the scope of the search.

    :query keywords: A whitespace delimited list of keywords to be included in the search. The implicit boolean AND is applied to all terms. {"required": true}
    :query limit: The number of results to return, if not specified 100 is assumed
    :status 200: Search completed, results are included in the response
    :status 400: Required parameter keywords was not specified or limit was not an integer
    :status 404: Search completed, but no results matched
    :rtype: tests.docs.things.protocol.SearchResults
    """  # noqa: E501 - the manual's own example, verbatim
    return jsonify({"count": 0, "results": []})


def create_thing(thing_id: int) -> Any:
    """Create a thing.

    :path thing_id: Which thing.
    :form colour: Its colour. {"required": true}
    :form int size: Its size.
    :body label: A label,
        continued on an indented line.
    :json extra: Anything else. {"type": "object"}
    :reqheader Authorization: Contains the authorization method, followed by a space delimited list of arguments identifying the requester
    :status 201: Created
    :rtype: tests.docs.things.deep.models.Other
    """  # noqa: E501
    return jsonify({}), 201


def broken() -> Any:
    """Every mistake at once.

    :query keywords A missing colon
    :query limit: Bad metadata {"required": tru}
    :query unclosed: Brace {"required": true
    :query odd: Odd metadata {"required": "yes", "type": "decimal", "colour": 1}
    :param x: Sphinx's, not Clay's
    :qurey typo: A typo
    :status: No code
    :status abc: Not a number
    :status 999: Out of range
    :status 200: OK
    :status 200: OK again
    :query: No name
    :query a b c: Too many words
    :query decimal x: Unknown type word
    :query limit: Twice
    :path missing: Not in the route {"required": false}
    ::
    :rtype: tests.docs.things.nowhere.Model
    :rtype: tests.docs.things.protocol.SearchResults
    """
    return jsonify({})


def more_broken() -> Any:
    """Summary only, then odd rtypes.

    :rtype tests.docs.things.protocol.Greeting
    :rtype two words: value
    """
    return jsonify({})


def not_a_model() -> Any:
    """An rtype that is no model.

    :rtype: tests.docs.things.protocol.NOT_A_MODEL
    """
    return jsonify({})


def bad_models() -> Any:
    """Models that cannot be resolved.

    :rtype: tests.docs.things.protocol.Dangling
    :status 200: Dangling reference inside
    """
    return jsonify({})


def no_module() -> Any:
    """:rtype: things.protocol.SearchResults"""
    return jsonify({})


def import_error() -> Any:
    """
    :rtype: tests.docs.things.broken.Model
    """
    return jsonify({})


def missing_dependency() -> Any:
    """
    :rtype: tests.docs.things.needs_missing.Model
    """
    return jsonify({})


def no_attribute() -> Any:
    """
    :rtype: tests.docs.things.protocol.Nothing.Deeper
    :rtype: notdotted
    :rtype:
    """
    return jsonify({})


def undocumented() -> Any:
    return jsonify({})


def blank() -> Any:
    """\n   \t"""
    return jsonify({})


def typed(number: float, kind: str) -> Any:
    """Converters and typed parameters.

    :path number: A number.
    :path kind: A kind. {"type": "string"}
    :query bool flag: A flag.
    :query count: A count. {"type": "integer"}
    :status 302: Elsewhere
    """
    return jsonify({})


def init_app(app: Flask) -> None:
    app.add_url_rule("/things/search", "search", search)
    app.add_url_rule("/things/<int:thing_id>", "create_thing", create_thing, methods=["POST"])
    app.add_url_rule("/broken", "broken", broken, methods=["GET", "POST", "DELETE"])
    app.add_url_rule("/more-broken", "more_broken", more_broken)
    app.add_url_rule("/not-a-model", "not_a_model", not_a_model)
    app.add_url_rule("/bad-models", "bad_models", bad_models)
    app.add_url_rule("/no-module", "no_module", no_module)
    app.add_url_rule("/import-error", "import_error", import_error)
    app.add_url_rule("/missing-dependency", "missing_dependency", missing_dependency)
    app.add_url_rule("/no-attribute", "no_attribute", no_attribute)
    app.add_url_rule("/undocumented", "undocumented", undocumented)
    app.add_url_rule("/blank", "blank", blank)
    app.add_url_rule("/typed/<float:number>/<any(a, b):kind>", "typed", typed)
