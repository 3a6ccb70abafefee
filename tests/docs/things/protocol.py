"""The models of Clay's manual, as written there (Swagger 1.2 ``$ref`` by name)."""

SearchResults = {
    "id": "SearchResults",
    "required": ["count", "results"],
    "properties": {
        "count": {"type": "integer"},
        "results": {"type": "array", "items": {"$ref": "SearchResult"}},
    },
}

SearchResult = {
    "id": "SearchResult",
    "required": ["name", "rank", "link"],
    "properties": {
        "name": {"type": "string"},
        "rank": {"type": "integer"},
        "link": {"type": "string"},
    },
}

#: Clay's other reading: a mapping of properties.
Greeting = {"greeting": {"type": "string"}, "shouting": {"type": "boolean"}}

#: A reference nothing answers.
Dangling = {"type": "object", "properties": {"next": {"$ref": "Nowhere"}}}

NOT_A_MODEL = 42
