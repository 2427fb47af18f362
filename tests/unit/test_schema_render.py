"""The published JSON Schema files do not depend on the msgspec version that renders them.

msgspec up to 0.19 keeps a docstring's indentation in `description` and puts `null` first in
an optional field's `anyOf`; later versions strip the indentation and put `null` last. A fresh
machine installs whatever the lock says, a developer may have another version: both must
write the same bytes, or `--check` fails on one of them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from linetrace.schemas import jsonschema
from linetrace.schemas.bodies import BODY_OF_TYPE


def as_older_msgspec(node: Any, *, in_data: bool = False) -> Any:
    """What an older msgspec makes of the same model: indented continuation lines of every
    description and reversed union branches."""
    if isinstance(node, list):
        return [as_older_msgspec(x, in_data=in_data) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if in_data or key in ("examples", "const", "default", "enum"):
            out[key] = value
        elif key == "description" and isinstance(value, str):
            out[key] = value.replace("\n", "\n    ")
        elif key == "anyOf":
            out[key] = [as_older_msgspec(b) for b in reversed(value)]
        else:
            out[key] = as_older_msgspec(value)
    return out


@pytest.mark.parametrize("event_type", sorted(BODY_OF_TYPE))
def test_an_older_msgspecs_output_renders_to_the_same_file(event_type: str) -> None:
    schema = jsonschema.build_schema(event_type)
    older = as_older_msgspec(schema)
    assert jsonschema.render(older) == jsonschema.render(schema)


def test_the_older_form_differs_before_rendering() -> None:
    # the simulation above must change something, or the test above proves nothing
    schema = jsonschema.build_schema("materials.installed")
    assert json.dumps(as_older_msgspec(schema)) != json.dumps(schema)


def test_plain_text_keeps_paragraphs_and_collapses_wrapping() -> None:
    doc = """First line
        continues here.

        Second   paragraph,
        wrapped.
    """
    assert jsonschema.plain_text(doc) == "First line continues here.\n\nSecond paragraph, wrapped."
    assert jsonschema.plain_text("One line.") == "One line."


def test_example_data_is_not_touched() -> None:
    schema = {"description": "a\n    b", "examples": [{"description": "x\n    y"}],
              "properties": {"description": {"type": "string", "description": "p\n  q"}}}
    out = json.loads(jsonschema.render(schema))
    assert out["description"] == "a b"
    assert out["examples"] == [{"description": "x\n    y"}]
    assert out["properties"]["description"] == {"type": "string", "description": "p q"}


@pytest.mark.parametrize("event_type", sorted(BODY_OF_TYPE))
def test_the_built_schema_is_the_published_one(event_type: str) -> None:
    # normalised when built, not only when written: a comparison with the model holds too
    assert jsonschema.load_schema(event_type) == jsonschema.build_schema(event_type)
