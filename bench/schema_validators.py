"""Which JSON Schema validator kiln compiles resource schemas with.

Run: ``.venv/bin/python bench/schema_validators.py`` (after
``pip install jsonschema fastjsonschema jsonschema-rs``).

Measures, for a typical resource schema, validating a valid record and an
invalid one (collecting *every* error, as PROTOCOL.md requires), per
candidate. Also reports whether each supports draft 2020-12 and can list
all errors. Results and the decision are in docs/benchmarks.md.
"""

from __future__ import annotations

import timeit

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "edible": {"type": "boolean"},
        "size": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
        "author": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
            "required": ["name"],
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}
VALID = {
    "name": "Amanita",
    "edible": False,
    "size": 12.5,
    "tags": ["red", "white", "forest"],
    "author": {"name": "Ada", "email": "ada@example.com"},
}
INVALID = {"name": "", "edible": "no", "size": -1, "tags": [1], "extra": True, "author": {}}
NUMBER = 20_000


def bench_jsonschema_rs():
    import jsonschema_rs

    validator = jsonschema_rs.Draft202012Validator(SCHEMA)

    def valid():
        validator.is_valid(VALID)

    def invalid():
        return [error.message for error in validator.iter_errors(INVALID)]

    return valid, invalid, len(invalid()), "2020-12, 7, 6, 4"


def bench_jsonschema():
    import jsonschema

    validator = jsonschema.Draft202012Validator(SCHEMA)

    def valid():
        validator.is_valid(VALID)

    def invalid():
        return [error.message for error in validator.iter_errors(INVALID)]

    return valid, invalid, len(invalid()), "2020-12, 2019-09, 7, 6, 4, 3"


def bench_fastjsonschema():
    import fastjsonschema

    validate = fastjsonschema.compile(
        {**SCHEMA, "$schema": "http://json-schema.org/draft-07/schema#"}
    )

    def valid():
        validate(VALID)

    def invalid():
        try:
            validate(INVALID)
        except fastjsonschema.JsonSchemaValueException as exc:
            return [exc.message]  # stops at the first error
        return []

    return valid, invalid, len(invalid()), "7, 6, 4 (no 2020-12)"


def main() -> None:
    print(f"{'validator':<16} {'valid µs':>9} {'invalid µs':>11} {'errors found':>13}  drafts")
    for name, factory in (
        ("jsonschema-rs", bench_jsonschema_rs),
        ("fastjsonschema", bench_fastjsonschema),
        ("jsonschema", bench_jsonschema),
    ):
        valid, invalid, errors, drafts = factory()
        t_valid = min(timeit.repeat(valid, number=NUMBER, repeat=3)) / NUMBER * 1e6
        t_invalid = (
            min(timeit.repeat(invalid, number=NUMBER // 10, repeat=3)) / (NUMBER // 10) * 1e6
        )
        print(f"{name:<16} {t_valid:>9.2f} {t_invalid:>11.2f} {errors:>13}  {drafts}")


if __name__ == "__main__":
    main()
