from __future__ import annotations

import base64

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.resource.query import (
    PROCESS_TOKEN_KEY,
    Query,
    QueryError,
    complete_sorting,
    decode_token,
    encode_token,
    pagination_context,
    parse_query,
    select_fields,
    token_key,
)
from kiln.storage import Filter, Operator, Sort

TAIL = (Sort("last_modified", -1), Sort("id", 1))


def anything(field):
    return True


def only(*names):
    return lambda field: field.split(".")[0] in {"id", "last_modified", "deleted", *names}


def parse(*params, known=anything, **kwargs):
    return parse_query(params, is_known_field=known, **kwargs)


def one_filter(name, value):
    (rv,) = parse((name, value)).filters
    return rv


@pytest.mark.parametrize(
    ("prefix", "operator"),
    [
        ("", Operator.EQ),
        ("not_", Operator.NOT),
        ("min_", Operator.MIN),
        ("max_", Operator.MAX),
        ("gt_", Operator.GT),
        ("lt_", Operator.LT),
    ],
)
def test_comparison_prefixes_give_their_operator_and_a_json_value(prefix, operator):
    assert one_filter(f"{prefix}size", "3") == Filter("size", 3, operator)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("-2.5", -2.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"3"', "3"),
        ("Amanita", "Amanita"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("", ""),
        ("1e400", "1e400"),
    ],
)
def test_values_are_json_decoded_else_strings(raw, value):
    assert one_filter("name", raw).value == value


@pytest.mark.parametrize(
    ("raw", "value"),
    [("a,b,3", ["a", "b", 3]), ('["a", "b,c"]', ["a", "b,c"]), ("x", ["x"]), ("1", [1])],
)
@pytest.mark.parametrize(
    ("prefix", "operator"), [("in_", Operator.IN), ("exclude_", Operator.EXCLUDE)]
)
def test_in_and_exclude_take_a_json_list_or_comma_separated_values(prefix, operator, raw, value):
    assert one_filter(f"{prefix}kind", raw) == Filter("kind", value, operator)


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("false", False), ("1", True), ("0", False)]
)
def test_has_takes_a_boolean(raw, value):
    assert one_filter("has_author", raw) == Filter("author", value, Operator.HAS)


@pytest.mark.parametrize("raw", ["yes", "2", "null", "[]"])
def test_has_with_anything_but_a_boolean_is_an_error(raw):
    with pytest.raises(QueryError, match="has_author"):
        parse(("has_author", raw))


def test_like_keeps_the_raw_pattern():
    assert one_filter("like_name", "*42*") == Filter("name", "*42*", Operator.LIKE)


@pytest.mark.parametrize(
    ("prefix", "operator"),
    [("contains_", Operator.CONTAINS), ("contains_any_", Operator.CONTAINS_ANY)],
)
@pytest.mark.parametrize(("raw", "value"), [('["a", 1]', ["a", 1]), ("a", ["a"]), ("3", [3])])
def test_contains_prefixes_take_a_list(prefix, operator, raw, value):
    assert one_filter(f"{prefix}tags", raw) == Filter("tags", value, operator)


def test_a_prefix_alone_is_a_field_name():
    assert one_filter("in_", "1") == Filter("in_", 1, Operator.EQ)


def test_dotted_fields_are_filters_on_sub_fields():
    assert one_filter("gt_author.age", "3") == Filter("author.age", 3, Operator.GT)


@pytest.mark.parametrize("name", ["a..b", ".a", "a.", "a b", "é$", "", "gt_"])
def test_invalid_field_names_are_errors(name):
    if name == "gt_":  # a prefix alone is a field name
        assert one_filter(name, "1").field == "gt_"
        return
    with pytest.raises(QueryError, match="not a valid field name"):
        parse((name, "1"))


def test_unknown_fields_are_errors():
    with pytest.raises(QueryError, match="Unknown filter field 'color'") as info:
        parse(("min_color", "1"), known=only("size"))
    assert info.value.name == "min_color"
    assert str(info.value) == "min_color in querystring: Unknown filter field 'color'."


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("id", "3", "3"),
        ("id", "1e2", "1e2"),
        ("id", "true", "true"),
        ("id", '"abc"', "abc"),
        ("id", "abc", "abc"),
        ("not_id", "null", "null"),
        ("in_id", "1,a,1e2", ["1", "a", "1e2"]),
        ("in_id", '[1, "a"]', ["1", "a"]),
        ("exclude_id", "[1.5]", ["1.5"]),
    ],
)
def test_id_values_are_always_strings(name, raw, value):
    assert one_filter(name, raw).value == value


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("last_modified", "12", 12),
        ("gt_last_modified", '"12"', 12),
        ("in_last_modified", "1,2", [1, 2]),
        ("in_last_modified", '[1, "2"]', [1, 2]),
        ("not_last_modified", '"-3"', -3),
    ],
)
def test_last_modified_values_are_integers_quoted_or_not(name, raw, value):
    assert one_filter(name, raw).value == value


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("last_modified", "abc"),
        ("last_modified", "1.5"),
        ("last_modified", "true"),
        ("last_modified", "null"),
        ("lt_last_modified", "²"),
        ("lt_last_modified", "٣"),
        ("lt_last_modified", "--5"),
        ("in_last_modified", "1,x"),
        ("in_last_modified", "[1, null]"),
        ("last_modified", "1" * 5000),
        ("last_modified", "9223372036854775808"),
        ("last_modified", "18446744073709551615"),
    ],
)
def test_last_modified_values_that_are_not_integers_are_errors(name, raw):
    with pytest.raises(QueryError, match="integer timestamp"):
        parse((name, raw))


@pytest.mark.parametrize(
    ("name", "operator"), [("_since", Operator.GT), ("_before", Operator.LT), ("_to", Operator.LT)]
)
@pytest.mark.parametrize("raw", ["123", '"123"', " 123 "])
def test_since_before_and_to_filter_on_last_modified_with_tombstones(name, operator, raw):
    query = parse((name, raw))
    assert query.filters == (Filter("last_modified", 123, operator),)
    assert query.include_deleted
    assert query.deprecated == (("_to",) if name == "_to" else ())


@pytest.mark.parametrize("raw", ["", "abc", '"12', "1.5", "²", "99999999999999999999"])
@pytest.mark.parametrize("name", ["_since", "_before", "_to"])
def test_since_before_and_to_need_an_integer(name, raw):
    with pytest.raises(QueryError) as info:
        parse((name, raw))
    assert info.value.name == name


@pytest.mark.parametrize(
    "params",
    [
        [("last_modified", "1")],
        [("has_last_modified", "true")],
        [("in_last_modified", "1,2")],
        [("like_last_modified", "1")],
    ],
)
def test_any_filter_on_last_modified_includes_tombstones(params):
    assert parse(*params).include_deleted


def test_other_filters_leave_tombstones_out():
    assert not parse(("deleted", "true"), ("size", "1")).include_deleted


def test_a_filter_given_twice_applies_twice():
    assert parse(("size", "1"), ("size", "2")).filters == (Filter("size", 1), Filter("size", 2))


def test_filters_keep_their_order():
    assert [f.field for f in parse(("b", "1"), ("a", "1")).filters] == ["b", "a"]


@pytest.mark.parametrize(
    ("raw", "sorting"),
    [
        ("name", (Sort("name", 1), *TAIL)),
        ("+name", (Sort("name", 1), *TAIL)),
        ("-name", (Sort("name", -1), *TAIL)),
        ("-author.name, size", (Sort("author.name", -1), Sort("size", 1), *TAIL)),
        ("name,-name", (Sort("name", 1), *TAIL)),
        ("last_modified", (Sort("last_modified", 1), Sort("id", 1))),
        ("-id", (Sort("id", -1), Sort("last_modified", -1))),
        ("id,-last_modified", (Sort("id", 1), Sort("last_modified", -1))),
        ("kebab-case", (Sort("kebab-case", 1), *TAIL)),
    ],
)
def test_sort_reads_signs_and_dotted_fields_and_ends_with_tie_breakers(raw, sorting):
    assert parse(("_sort", raw)).sorting == sorting


def test_the_default_order_is_newest_first_then_id():
    assert parse().sorting == TAIL


@pytest.mark.parametrize("raw", ["", "a,", "a b", "--a", "-", "+-a", "a..b", "a.", "a,,b", "*"])
def test_invalid_sort_items_are_errors(raw):
    with pytest.raises(QueryError, match="is not a field name") as info:
        parse(("_sort", raw))
    assert info.value.name == "_sort"


def test_unknown_sort_fields_are_errors():
    with pytest.raises(QueryError, match="Unknown sort field 'color'"):
        parse(("_sort", "-color"), known=only("size"))
    assert parse(("_sort", "-size,id"), known=only("size")).sorting[0] == Sort("size", -1)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "id", "last_modified"]), st.sampled_from([1, -1]))
    )
)
def test_completed_sorting_names_each_field_once_and_ends_totally_ordered(sorts):
    completed = complete_sorting([Sort(f, d) for f, d in sorts])
    names = [sort.field for sort in completed]
    assert len(names) == len(set(names))
    assert {"id", "last_modified"} <= set(names)
    first = {}
    for f, d in sorts:
        first.setdefault(f, d)
    assert completed[: len(first)] == tuple(Sort(f, d) for f, d in first.items())


@pytest.mark.parametrize(
    ("params", "kwargs", "limit"),
    [
        ([("_limit", "5")], {}, 5),
        ([("_limit", " 5 ")], {}, 5),
        ([("_limit", "50")], {"max_limit": 20}, 20),
        ([], {"max_limit": 20}, 20),
        ([], {}, 10_000),
        ([], {"default_limit": 7}, 7),
        ([], {"default_limit": 70, "max_limit": 20}, 20),
        ([("_limit", "3")], {"default_limit": 7}, 3),
        ([("_limit", "30")], {"default_limit": 7}, 30),
        ([("_limit", "9" * 19)], {}, 10_000),
    ],
)
def test_limit_is_capped_by_max_limit_and_defaults_to_paginate_by(params, kwargs, limit):
    assert parse(*params, **kwargs).limit == limit


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "1.5", "", "²", "٣", "9" * 5000])
def test_limit_must_be_a_positive_integer(raw):
    with pytest.raises(QueryError, match="positive integer"):
        parse(("_limit", raw))


def test_fields_are_dotted_names_and_empty_items_are_skipped():
    assert parse(("_fields", "name, author.name,,")).fields == ("name", "author.name")
    assert parse().fields is None


def test_fields_with_an_unknown_root_are_errors():
    with pytest.raises(QueryError, match="Unknown field 'color'"):
        parse(("_fields", "size,color.hue"), known=only("size"))


def test_fields_check_roots_with_is_known_root_when_given():
    query = parse_query([("_fields", "color")], is_known_field=only(), is_known_root=only("color"))
    assert query.fields == ("color",)


@pytest.mark.parametrize("raw", ["a b", "a..b", "*"])
def test_invalid_fields_are_errors(raw):
    with pytest.raises(QueryError, match="not a field name"):
        parse(("_fields", raw))


@pytest.mark.parametrize(
    "name", ["_since", "_before", "_to", "_sort", "_limit", "_token", "_fields"]
)
def test_special_parameters_may_appear_once(name):
    value = {"_sort": "a", "_limit": "1", "_fields": "a"}.get(name, "1")
    if name == "_token":
        value = encode_token({"id": "a"}, [], "ctx")
    parse((name, value))
    with pytest.raises(QueryError, match="may appear only once"):
        parse((name, value), (name, value))


def test_unknown_underscore_parameters_are_ignored():
    assert parse(("_x", "1"), ("_x", "2"), ("_", "3")) == Query(sorting=TAIL, limit=10_000)


@pytest.mark.parametrize(
    ("record", "fields", "selected"),
    [
        (
            {"id": "a", "last_modified": 1, "x": 1, "y": 2},
            ["x"],
            {"id": "a", "last_modified": 1, "x": 1},
        ),
        ({"id": "a", "deleted": True}, ["x"], {"id": "a", "deleted": True}),
        ({"id": "a", "a": {"b": 1, "c": 2}}, ["a.b"], {"id": "a", "a": {"b": 1}}),
        ({"id": "a", "a": {"b": 1, "c": 2}}, ["a.b", "a.c"], {"id": "a", "a": {"b": 1, "c": 2}}),
        ({"id": "a", "a": {"b": 1, "c": 2}}, ["a.b", "a"], {"id": "a", "a": {"b": 1, "c": 2}}),
        ({"id": "a", "a": "flat"}, ["a.b"], {"id": "a"}),
        ({"id": "a", "a": {"b": None}}, ["a.b", "z"], {"id": "a", "a": {"b": None}}),
        ({"id": "a"}, [], {"id": "a"}),
    ],
)
def test_select_fields_keeps_the_named_paths_and_the_reserved_fields(record, fields, selected):
    before = orjson.loads(orjson.dumps(record))
    assert select_fields(record, fields) == selected
    assert record == before


# -- tokens ------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
field_names = st.sampled_from(["a", "b", "é", "a.b", "ü.x", "id", "last_modified"])


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b", "é", "ü", "id", "last_modified"]), json_values),
    st.lists(st.tuples(field_names, st.sampled_from([1, -1])), max_size=4),
    st.text(),
)
def test_a_token_carries_the_sort_fields_of_the_last_record(record, sorts, context):
    sorting = complete_sorting([Sort(f, d) for f, d in sorts])
    token = encode_token(record, sorting, context)
    payload = decode_token(token)
    assert payload["ctx"] == context
    assert payload["v"] == 2
    # Sealed: no field value, name or the context shows in the token.
    assert orjson.dumps(payload["last"]) not in base64.urlsafe_b64decode(token + "==")
    assert payload["last"] == select_fields(record, [s.field for s in sorting])


@settings(max_examples=300, deadline=None)
@given(st.text() | st.binary().map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_decoding_any_text_gives_a_payload_or_a_query_error(raw):
    try:
        payload = decode_token(raw)
    except QueryError:
        return
    assert isinstance(payload["last"], dict)


def b64(payload):
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def sealed(payload, key=PROCESS_TOKEN_KEY):
    text = orjson.dumps(payload)
    return base64.urlsafe_b64encode(AESSIV(key).encrypt(text, None)).decode().rstrip("=")


@pytest.mark.parametrize(
    "raw",
    [
        "é",
        "garbage!",
        "a",
        sealed([1, 2]),
        sealed({"v": 1, "last": {}, "ctx": "x"}),
        sealed({"v": True, "last": {}, "ctx": "x"}),
        sealed({"v": 2.5, "last": {}, "ctx": "x"}),
        sealed({"v": 2, "last": [], "ctx": "x"}),
        sealed({"v": 2, "last": {}, "ctx": 3}),
        sealed({"v": 2, "last": {}}),
    ],
)
def test_malformed_tokens_are_query_errors(raw):
    with pytest.raises(QueryError, match="_token in querystring: has invalid content"):
        decode_token(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "YQ",
        # Tokens of kiln before 0.1.0: base64 JSON, readable by anyone.
        b64({"v": 1, "last": {"id": "a", "last_modified": 3}, "ctx": "c"}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        # Sealed with another secret.
        sealed({"v": 2, "last": {}, "ctx": "x"}, token_key("another secret")),
    ],
)
def test_tokens_of_older_versions_or_another_secret_are_refused_in_a_sentence(raw):
    with pytest.raises(QueryError, match="was not issued by this service") as info:
        decode_token(raw)
    assert "start again without it" in str(info.value)


def test_a_tampered_token_is_refused_or_decodes_to_what_was_written():
    token = encode_token({"id": "a", "last_modified": 3}, TAIL, "ctx")
    for position in range(len(token)):
        for char in "A_-":
            tampered = token[:position] + char + token[position + 1 :]
            try:
                payload = decode_token(tampered)
            except QueryError:
                continue
            assert set(payload) >= {"v", "last", "ctx"}


def test_a_padded_token_decodes():
    token = encode_token({"id": "a"}, [], "c")
    assert decode_token(token + "=" * (-len(token) % 4)) == {
        "v": 2,
        "last": {"id": "a"},
        "ctx": "c",
    }


def test_a_token_decodes_with_the_key_it_was_sealed_with():
    key = token_key("a deployment's secret")
    token = encode_token({"id": "a"}, [], "c", key)
    assert decode_token(token, key)["last"] == {"id": "a"}
    with pytest.raises(QueryError):
        decode_token(token)


def test_parse_query_decodes_the_token():
    token = encode_token({"id": "a", "last_modified": 3}, TAIL, "ctx")
    assert parse(("_token", token)).token == {
        "v": 2,
        "last": {"id": "a", "last_modified": 3},
        "ctx": "ctx",
    }


BASE = ("mushroom", "", [Filter("a", 1), Filter("b", "x", Operator.GT)], list(TAIL))


@pytest.mark.parametrize(
    "changed",
    [
        ("champignon", *BASE[1:]),
        (BASE[0], "/buckets/b", *BASE[2:]),
        (*BASE[:2], [Filter("a", 2), BASE[2][1]], BASE[3]),
        (*BASE[:2], [Filter("a", "1"), BASE[2][1]], BASE[3]),
        (*BASE[:2], [Filter("a", 1, Operator.NOT), BASE[2][1]], BASE[3]),
        (*BASE[:2], BASE[2][:1], BASE[3]),
        (*BASE[:3], [Sort("a", 1), *TAIL]),
        (*BASE[:3], [Sort("last_modified", 1), Sort("id", 1)]),
    ],
)
def test_pagination_context_differs_when_what_is_listed_differs(changed):
    assert pagination_context(*changed) != pagination_context(*BASE)


def test_pagination_context_is_stable_and_ignores_filter_order():
    assert pagination_context(*BASE) == pagination_context(*BASE)
    swapped = (*BASE[:2], list(reversed(BASE[2])), BASE[3])
    assert pagination_context(*swapped) == pagination_context(*BASE)


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), json_values), max_size=4), st.randoms())
def test_pagination_context_of_filters_of_any_values_ignores_their_order(pairs, random):
    filters = [Filter(f, v) for f, v in pairs]
    shuffled = list(filters)
    random.shuffle(shuffled)
    assert pagination_context("r", "", filters, TAIL) == pagination_context("r", "", shuffled, TAIL)


query_names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["_since", "_before", "_to", "_sort", "_limit", "_token", "_fields", "_x"]),
    st.builds(
        "{}{}".format,
        st.sampled_from(
            [
                "",
                "not_",
                "min_",
                "max_",
                "gt_",
                "lt_",
                "in_",
                "exclude_",
                "has_",
                "like_",
                "contains_",
                "contains_any_",
            ]
        ),
        st.sampled_from(["a", "a.b", "id", "last_modified", "deleted", "", "é", "-"]),
    ),
)
query_values = st.one_of(
    st.text(max_size=12),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.sampled_from(["1", '"1"', "²", "-", "a,b", "-a,+b.c", "0", "1e400", "9" * 30]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(query_names, query_values), max_size=6))
def test_parse_query_raises_nothing_but_query_error(params):
    try:
        query = parse_query(params, is_known_field=only("a"))
    except QueryError:
        return
    assert query.limit is not None
    pagination_context("r", "", query.filters, query.sorting)
    for f in query.filters:
        if f.field == "id" and f.operator not in (
            Operator.HAS,
            Operator.CONTAINS,
            Operator.CONTAINS_ANY,
        ):
            values = f.value if isinstance(f.value, list) else [f.value]
            assert all(isinstance(v, str) for v in values)
        if f.field == "last_modified" and f.operator not in (
            Operator.HAS,
            Operator.LIKE,
            Operator.CONTAINS,
            Operator.CONTAINS_ANY,
        ):
            values = f.value if isinstance(f.value, list) else [f.value]
            assert all(type(v) is int for v in values)
