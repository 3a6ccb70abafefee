from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.resource.conftest import PREFIX, Caller, assert_error, create


@pytest.mark.parametrize("limit", ["abc", "0", "-1", "1.5"])
def test_a_limit_that_is_not_a_positive_integer_answers_400(caller, limit):
    assert_error(caller.both("GET", f"/notes?_limit={limit}"), 400, 107)


def relative(next_page):
    parts = urlsplit(next_page)
    # Neither http_host nor trusted_hosts is set: no Host is trusted, the URL is relative.
    assert parts.scheme == ""
    assert parts.netloc == ""
    assert parts.path.startswith(PREFIX)
    return parts.path.removeprefix(PREFIX) + "?" + parts.query


def follow(caller, path, method="GET"):
    pages = []
    seen_tokens = set()
    while path is not None:
        rv = caller.both(method, path)
        assert rv.status == 200, rv.body
        pages.append(rv.data)
        next_page = rv.headers.get("Next-Page")
        path = relative(next_page) if next_page else None
        if path is not None:
            token = dict(parse_qsl(urlsplit(path).query))["_token"]
            assert token not in seen_tokens
            seen_tokens.add(token)
    return pages


@pytest.mark.parametrize("count", [5, 6, 7])
@pytest.mark.parametrize(
    "query",
    ["", "_sort=group,-n", "group=1", "_sort=-flag,n&min_n=1", "_sort=missing_sometimes,n"],
)
def test_following_next_page_returns_every_record_once_in_order(caller, count, query):
    for n in range(count):
        data = {"n": n, "group": n % 2, "flag": n % 3 == 0}
        if n % 2:
            data["missing_sometimes"] = n // 2
        create(caller, "/notes", data)
    everything = caller.both("GET", f"/notes?{query}").data
    pages = follow(caller, f"/notes?_limit=3&{query}")
    assert all(len(page) == 3 for page in pages[:-1])
    assert [r["id"] for page in pages for r in page] == [r["id"] for r in everything]


def test_next_page_keeps_the_original_parameters(caller):
    for n in range(3):
        create(caller, "/notes", {"n": n})
    rv = caller.both("GET", "/notes?_limit=2&min_n=0&_sort=n&_fields=n")
    params = parse_qsl(urlsplit(rv.headers["Next-Page"]).query)
    names = [name for name, _ in params]
    assert names == ["min_n", "_sort", "_fields", "_limit", "_token"]
    assert dict(params)["_limit"] == "2"


def test_the_last_page_has_no_next_page(caller):
    create(caller, "/notes", {})
    assert "Next-Page" not in caller.both("GET", "/notes?_limit=1").headers


def test_paginate_by_sets_the_page_size(build_app):
    caller = Caller(build_app({"paginate": {"by": 2}}).test_client(), "direct")
    for n in range(5):
        create(caller, "/notes", {"n": n})
    assert len(caller.both("GET", "/notes").data) == 2
    pages = follow(caller, "/notes")
    assert [len(page) for page in pages] == [2, 2, 1]


def test_max_limit_caps_the_page_but_not_paging_past_it(build_app):
    caller = Caller(build_app({"paginate": {"max_limit": 2}}).test_client(), "direct")
    for n in range(5):
        create(caller, "/notes", {"n": n})
    rv = caller.both("GET", "/notes?_limit=100")
    assert len(rv.data) == 2
    assert dict(parse_qsl(urlsplit(rv.headers["Next-Page"]).query))["_limit"] == "2"
    assert sum(len(page) for page in follow(caller, "/notes")) == 5


def test_next_page_honours_http_scheme_and_host(build_app):
    app = build_app({"http_scheme": "https", "http_host": "api.example.org"})
    caller = Caller(app.test_client(), "direct")
    create(caller, "/notes", {})
    create(caller, "/notes", {})
    next_page = caller.both("GET", "/notes?_limit=1").headers["Next-Page"]
    assert next_page.startswith("https://api.example.org/v1/notes?")


@pytest.mark.parametrize(
    "elsewhere",
    ["/mushrooms?_limit=1", "/notes?_limit=1&n=1", "/notes?_limit=1&_sort=n", "/articles?_limit=1"],
)
def test_a_token_replayed_on_another_collection_filter_or_sort_answers_400(caller, elsewhere):
    for _ in range(3):
        create(caller, "/notes", {"n": 1})
    token = dict(
        parse_qsl(urlsplit(caller.direct("GET", "/notes?_limit=1").headers["Next-Page"]).query)
    )["_token"]
    rv = caller.both("GET", f"{elsewhere}&_token={token}")
    assert_error(rv, 400, 107)
    assert rv.body["details"][0]["name"] == "_token"


def test_a_token_replayed_under_another_parent_answers_400(caller):
    for bucket in ("a", "b"):
        caller.direct("PUT", f"/buckets/{bucket}", {"data": {}})
    for n in range(2):
        caller.direct("PUT", f"/buckets/a/collections/c{n}", {"data": {}})
    caller.direct("PUT", "/buckets/b/collections/c0", {"data": {}})
    next_page = caller.direct("GET", "/buckets/a/collections?_limit=1").headers["Next-Page"]
    token = dict(parse_qsl(urlsplit(next_page).query))["_token"]
    rv = caller.both("GET", f"/buckets/b/collections?_limit=1&_token={token}")
    assert_error(rv, 400, 107)


@pytest.mark.parametrize("token", ["garbage", "e30", "!!!", "eyJ2IjoxfQ"])
def test_a_garbage_token_answers_400(caller, token):
    assert_error(caller.both("GET", f"/notes?_token={token}"), 400, 107)
