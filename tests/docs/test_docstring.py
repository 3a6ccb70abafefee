from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kiln.docs._docstring import DIRECTIVES, Parameter, Status, parse_docstring

MANUAL = """
    Search for things

    This is an example of a search endpoint that takes query string
    parameters to limit the scope of the search.

    :query keywords: A whitespace delimited list of keywords. {"required": true}
    :query limit: The number of results to return, if not specified 100 is assumed
    :status 200: Search completed, results are included in the response
    :status 404: Search completed, but no results matched
    :rtype: things.protocol.SearchResults
    """


def test_the_manuals_example_gives_summary_description_parameters_statuses_and_rtype():
    doc = parse_docstring(MANUAL)
    assert doc.summary == "Search for things"
    assert doc.description == (
        "This is an example of a search endpoint that takes query string\n"
        "parameters to limit the scope of the search."
    )
    assert doc.parameters == (
        Parameter("query", "keywords", "A whitespace delimited list of keywords.", True),
        Parameter(
            "query", "limit", "The number of results to return, if not specified 100 is assumed"
        ),
    )
    assert doc.statuses == (
        Status(200, "Search completed, results are included in the response"),
        Status(404, "Search completed, but no results matched"),
    )
    assert doc.rtype == "things.protocol.SearchResults"
    assert doc.warnings == ()
    assert doc.documented


@pytest.mark.parametrize(
    ("line", "location"),
    [
        (":query q: x", "query"),
        (":form f: x", "form"),
        (":body b: x", "body"),
        (":json j: x", "body"),
        (":path p: x", "path"),
        (":reqheader Authorization: x", "header"),
    ],
)
def test_every_parameter_directive_has_its_location(line, location):
    (parameter,) = parse_docstring(f"Summary\n\n{line}").parameters
    assert parameter.location == location
    assert parameter.description == "x"


def test_the_required_metadata_works_and_its_braces_leave_the_description():
    (parameter,) = parse_docstring(':query foo: Does foo {"required": true} like things').parameters
    assert parameter.required is True
    assert parameter.description == "Does foo like things"


def test_path_parameters_are_always_required_and_saying_otherwise_warns():
    doc = parse_docstring(':path a: A\n:path b: B {"required": false}')
    assert [p.required for p in doc.parameters] == [True, True]
    assert doc.warnings == ("line 2: path parameter 'b' is always required.",)


def test_types_come_from_metadata_or_sphinxs_typed_form_with_aliases():
    doc = parse_docstring(
        ':query int a: A\n:query b: B {"type": "boolean"}\n:query dict c: C\n:query d: D'
    )
    assert [p.type for p in doc.parameters] == ["integer", "boolean", "object", None]


def test_indented_lines_continue_a_directive_and_the_rest_is_description():
    doc = parse_docstring(
        "Summary\n\n:query q: First part\n    second part\nBack to text\n\n   Indented text"
    )
    assert doc.parameters[0].description == "First part second part"
    assert doc.description == "Back to text\n\nIndented text"


def test_a_docstring_of_directives_only_has_no_summary_but_is_documented():
    doc = parse_docstring(":status 204: Done")
    assert doc.summary == ""
    assert doc.documented


@pytest.mark.parametrize("docstring", [None, "", "  \n\t  "])
def test_no_docstring_is_undocumented_and_never_an_error(docstring):
    doc = parse_docstring(docstring)
    assert not doc.documented
    assert doc.warnings == ()


def test_rtype_alone_is_documented():
    assert parse_docstring(":rtype: a.B").documented


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        (":query keywords A missing colon", "':query' lacks its closing ':'"),
        (":rtype a.B", "write ':rtype: a.B'"),
        (":rtype", "write ':rtype: module.Model'"),
        (":query", "write ':query name: description'"),
        (':query q: x {"required": tru}', "is not valid JSON"),
        (':query q: x {"required": true', "has no closing '}'"),
        (':query q: x {"required": "yes"}', '"required" must be true or false'),
        (':query q: x {"type": "decimal"}', '"type" must be one of'),
        (':query q: x {"type": 3}', '"type" must be one of'),
        (':query q: x {"colour": 1}', "unknown metadata key 'colour'"),
        (":param x: Sphinx's", "unknown directive ':param' ignored; known: :query"),
        (":qurey q: typo", "did you mean ':query'?"),
        (":unknown", "unknown directive ':unknown'"),
        (":status: no code", "':status:' needs an HTTP status code"),
        (":status abc: nope", "':status abc:' needs an HTTP status code"),
        (":status 99: nope", "needs an HTTP status code from 100 to 599"),
        (":status 600: nope", "needs an HTTP status code from 100 to 599"),
        (":query: x", "':query:' needs a name"),
        (":query a b c: x", "has too many words"),
        (":query decimal x: y", "'decimal' is not a type"),
        ("::", "'::' is not a directive"),
        (": spaced: x", "is not a directive"),
        (":rtype:", "names no model"),
        (":rtype: two words", "must be one dotted name"),
        (":rtype key: value", "':rtype' takes no key"),
    ],
)
def test_each_malformed_line_is_a_warning_with_its_line_number(line, warning):
    doc = parse_docstring(f"Summary\n\n{line}")
    assert len(doc.warnings) >= 1
    assert doc.warnings[0].startswith("line 3: ")
    assert warning in doc.warnings[0]


def test_a_malformed_line_is_skipped_and_the_rest_still_read():
    doc = parse_docstring(":status abc: x\n:status 201: Created\n:query: x\n:query q: Q")
    assert doc.statuses == (Status(201, "Created"),)
    assert [p.name for p in doc.parameters] == ["q"]


def test_a_missing_colon_is_read_leniently():
    doc = parse_docstring(":query keywords the words\n:status 404 Not found\n:rtype a.B")
    assert doc.parameters[0] == Parameter("query", "keywords", "the words")
    assert doc.statuses == (Status(404, "Not found"),)
    assert doc.rtype == "a.B"
    assert len(doc.warnings) == 3


def test_the_first_of_duplicates_counts_and_the_others_warn():
    doc = parse_docstring(
        ":query q: first\n:query q: second\n:status 200: a\n:status 200: b\n"
        ":rtype: a.B\n:rtype: c.D"
    )
    assert doc.parameters[0].description == "first"
    assert doc.statuses == (Status(200, "a"),)
    assert doc.rtype == "a.B"
    assert [w.split(":")[0] for w in doc.warnings] == ["line 2", "line 4", "line 6"]


def test_the_same_name_under_two_directives_is_two_parameters():
    doc = parse_docstring(":query q: a\n:form q: b")
    assert [p.location for p in doc.parameters] == ["query", "form"]


def test_invalid_metadata_keeps_the_description_before_the_brace():
    (parameter,) = parse_docstring(':query q: Words {"required": tru}').parameters
    assert parameter.description == "Words"
    assert parameter.required is False


def test_long_metadata_is_shortened_in_warnings():
    doc = parse_docstring(":query q: x {" + '"a": 1, ' * 20 + "oops}")
    assert "…" in doc.warnings[0]


@given(st.text())
def test_any_text_parses_without_raising(text):
    doc = parse_docstring(text)
    assert all(w.startswith("line ") for w in doc.warnings)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([*DIRECTIVES, "param", ""]),
            st.text(alphabet=' ab:{}"1', max_size=8),
            st.text(alphabet=' xy:{}"truefals', max_size=20),
        ),
        max_size=8,
    )
)
def test_any_directive_soup_parses_without_raising(lines):
    doc = parse_docstring("\n".join(f":{d} {k}: {v}" for d, k, v in lines))
    assert all(warning.startswith("line ") for warning in doc.warnings)


def test_text_after_leading_directives_gives_the_summary():
    doc = parse_docstring(":status 200: OK\n\nSummary here\nMore")
    assert (doc.summary, doc.description) == ("Summary here", "More")
