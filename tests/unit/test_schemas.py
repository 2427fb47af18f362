"""The msgspec models (what ingest enforces) and the published JSON Schemas say the same thing.

Every case goes through both judges: `envelope.decode_event` on the exact bytes, and a draft
2020-12 validator on the parsed document, with format checking and ECMA-262 pattern semantics
(`$` is the end of the string, as in every validator outside Python). A case they judge
differently fails its test and prints the case. Differences JSON Schema cannot express at all
(duplicate keys, `60.0` for an integer) have tests of their own.
"""

from __future__ import annotations

import ast
import base64
import copy
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import best_match

from linetrace.schemas import jsonschema as generator
from linetrace.schemas.bodies import BODY_OF_TYPE, SYSTEM_TYPES
from linetrace.schemas.bodies import INT32_MAX, INT64_MAX
from linetrace.schemas.envelope import (
    MAX_JSON_DEPTH, RFC3339_UTC, STATIONSEQ_LEAD_US, Envelope, dataschema_of, decode_event,
    decode_stored_event,
)
from linetrace.schemas.errors import DLQ_CODES, QUARANTINE_CODES, MalformedEvent
from linetrace.schemas.examples import EXAMPLE_STATIONSEQ, example_body, example_event, example_types
from linetrace.schemas.signing import generate_key, keyid_of, private_key_pem, verify_value
from linetrace.schemas.topics import TOPIC_OF_TYPE
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
TYPES = sorted(BODY_OF_TYPE)
STATION_TYPES = [t for t in TYPES if t not in SYSTEM_TYPES]
OVERFLOW = "__overflow__"  # replaced by the JSON number 1e400 (beyond an IEEE-754 double)
ABSENT = object()


def _ecma(pattern: str) -> str:
    """ECMA-262 `$` (end of input) in Python terms: Python's `$` also matches before a `\\n`."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and re.search(_ecma(pattern), instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)  # type: ignore[untyped-decorator]
def _date_time(instance: object) -> bool:
    if isinstance(instance, str):
        datetime.fromisoformat(instance.replace("Z", "+00:00"))
    return True


Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})
SCHEMAS = {t: generator.load_schema(t) for t in TYPES}
VALIDATORS = {t: Validator(s, format_checker=FORMATS) for t, s in SCHEMAS.items()}


def decoder_verdict(value: bytes) -> str | None:
    try:
        decode_event(value)
    except MalformedEvent as e:
        return f"{e.code}: {e}"
    return None


def schema_verdict(value: bytes) -> str | None:
    doc = json.loads(value)
    t = doc.get("type") if isinstance(doc, dict) else None
    for v in [VALIDATORS[t]] if isinstance(t, str) and t in VALIDATORS else list(VALIDATORS.values()):
        error = best_match(v.iter_errors(doc))
        if error is None:
            return None
    return f"{error.json_path}: {error.message}"[:300]


def judge(label: str, value: bytes, expected: bool | None) -> str | None:
    """None if both judges agree (and match `expected` when given), else the whole case."""
    d, s = decoder_verdict(value), schema_verdict(value)
    if (d is None) == (s is None) and (expected is None or (d is None) == expected):
        return None
    want = "" if expected is None else f"expected {'accept' if expected else 'reject'}; "
    return (f"{label}: {want}decoder {'accepted' if d is None else 'refused: ' + d}; "
            f"schema {'accepted' if s is None else 'refused: ' + s}\n    value: {value[:400]!r}")


def assert_all_agree(cases: list[tuple[str, bytes, bool | None]]) -> None:
    failures = [f for f in (judge(*c) for c in cases) if f]
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + "\n".join(failures)


def encode(doc: Any) -> bytes:
    return json.dumps(doc).replace(f'"{OVERFLOW}"', "1e400").encode()


def decode_error_code(value: bytes) -> str:
    with pytest.raises(MalformedEvent) as e:
        decode_event(value)
    return e.value.code


def example_doc(event_type: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(example_event(event_type))
    return doc


def mutated(doc: dict[str, Any], path: tuple[Any, ...], key: str, value: Any) -> bytes:
    out = copy.deepcopy(doc)
    node = out
    for step in path:
        node = node[step]
    if value is ABSENT:
        node.pop(key, None)
    else:
        node[key] = value
    return encode(out)


# --- the schema files ---------------------------------------------------------------------


@pytest.mark.parametrize("event_type", TYPES)
def test_every_schema_is_valid_draft_2020_12_with_its_metadata(event_type: str) -> None:
    schema = SCHEMAS[event_type]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == dataschema_of(event_type)
    assert schema["properties"]["dataschema"]["const"] == dataschema_of(event_type)
    assert schema["x-topic"] == TOPIC_OF_TYPE[event_type]
    assert "subject" in schema["x-key"] and schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False
    system = event_type in SYSTEM_TYPES
    assert ("stationseq" in schema["required"]) is not system
    assert ("stationseq" in schema["properties"]) is not system


def test_schema_files_match_the_generator() -> None:
    assert generator.check() == []
    for text in generator.build_all().values():
        assert text.endswith("}\n") and '\n  "$id"' in text  # 2-space indent, final newline
    assert _digests_in_a_fresh_process("1")["schemas"] == _digests(generator.build_all())
    for t in TYPES:
        assert SCHEMAS[t] == json.loads(generator.build_all()[generator.schema_file_name(t)])


def test_check_reports_stale_missing_and_unknown_files(tmp_path: Path) -> None:
    assert generator.main(["--write", "--dir", str(tmp_path)]) == 0
    assert generator.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "unit.arrived.v1.schema.json").write_text("{}\n")
    (tmp_path / "work.started.v1.schema.json").unlink()
    (tmp_path / "unit.teleported.v1.schema.json").write_text("{}\n")
    assert generator.check(tmp_path) == [
        "unit.arrived.v1.schema.json: differs from the generated schema",
        "work.started.v1.schema.json: missing",
        "unit.teleported.v1.schema.json: no event type generates it",
    ]
    assert generator.main(["--check", "--dir", str(tmp_path)]) == 1


def test_check_runs_as_a_module_against_the_committed_files() -> None:
    run = subprocess.run([sys.executable, "-m", "linetrace.schemas.jsonschema", "--check"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr


def test_load_schema_refuses_an_unknown_type() -> None:
    with pytest.raises(KeyError, match="unit.teleported"):
        generator.load_schema("unit.teleported")


# --- examples -----------------------------------------------------------------------------


_DIGESTS = """
import hashlib, json
from linetrace.schemas import jsonschema as g
from linetrace.schemas.examples import example_event, example_types
digest = lambda b: hashlib.sha256(b).hexdigest()
print(json.dumps({"schemas": {k: digest(v.encode()) for k, v in g.build_all().items()},
                  "examples": {t: digest(example_event(t)) for t in example_types()}}))
"""


def _digests(texts: dict[str, str]) -> dict[str, str]:
    return {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()}


def _digests_in_a_fresh_process(hash_seed: str) -> dict[str, dict[str, str]]:
    """The generated schemas and examples as another interpreter (another hash seed, another
    moment) makes them: what depends on set order, the clock or randomness differs."""
    run = subprocess.run([sys.executable, "-c", _DIGESTS], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert run.returncode == 0, run.stderr
    out: dict[str, dict[str, str]] = json.loads(run.stdout)
    return out


def test_every_type_has_a_deterministic_example() -> None:
    assert sorted(example_types()) == TYPES
    here = {t: hashlib.sha256(example_event(t)).hexdigest() for t in TYPES}
    assert _digests_in_a_fresh_process("2")["examples"] == here
    for t in TYPES:
        assert example_body(t) is not example_body(t)


@pytest.mark.parametrize("event_type", TYPES)
def test_every_schema_example_is_accepted_by_decoder_and_schema(event_type: str) -> None:
    examples = SCHEMAS[event_type]["examples"]
    assert examples and examples[0] == example_doc(event_type)
    assert_all_agree([(f"examples[{i}]", encode(e), True) for i, e in enumerate(examples)])
    assert_all_agree([("example_event", example_event(event_type), True)])


def _structs(t: mi.Type, seen: set[type]) -> None:
    if isinstance(t, mi.StructType):
        if t.cls not in seen:
            seen.add(t.cls)
            for f in t.fields:
                _structs(f.type, seen)
    for inner in getattr(t, "types", ()) + ((t.item_type,) if isinstance(t, mi.ListType) else ()):
        _structs(inner, seen)


def struct_nodes(value: Any, t: mi.Type, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], mi.StructType]]:
    """Every object in an example with the struct type it decodes as."""
    if isinstance(t, mi.UnionType):
        for inner in t.types:
            yield from struct_nodes(value, inner, path)
    elif isinstance(t, mi.StructType) and isinstance(value, dict):
        yield path, t
        for f in t.fields:
            if f.encode_name in value:
                yield from struct_nodes(value[f.encode_name], f.type, path + (f.encode_name,))
    elif isinstance(t, mi.ListType) and isinstance(value, list):
        for i, item in enumerate(value):
            yield from struct_nodes(item, t.item_type, path + (i,))


def test_examples_reach_every_struct_of_every_body() -> None:
    """So the field mutations below reach every field of every model."""
    wanted: set[type] = set()
    reached: set[type] = set()
    for t in TYPES:
        _structs(mi.type_info(BODY_OF_TYPE[t]), wanted)
        reached |= {s.cls for _, s in struct_nodes(example_doc(t)["data"], mi.type_info(BODY_OF_TYPE[t]), ())}
    assert wanted == reached, f"no example contains {sorted(c.__name__ for c in wanted - reached)}"


# --- systematic mutations -----------------------------------------------------------------


def field_values(f: mi.Field) -> Iterator[tuple[str, Any, bool]]:
    """(what, value, valid?) for one field, derived from the model's own constraints."""
    types = f.type.types if isinstance(f.type, mi.UnionType) else (f.type,)
    nullable = any(isinstance(x, mi.NoneType) for x in types)
    (t,) = [x for x in types if not isinstance(x, mi.NoneType)]
    yield "absent", ABSENT, not f.required
    yield "null", None, nullable
    if isinstance(t, (mi.IntType, mi.FloatType)):
        assert t.gt is None and t.lt is None and t.multiple_of is None
        yield "string", "7", False
        yield "bool", True, False
        d = 1 if isinstance(t, mi.IntType) else 0.5
        if isinstance(t, mi.IntType):
            yield "fraction", 7.5, False
        else:
            yield "beyond a double", OVERFLOW, False
            yield "integer literal", 7 if t.ge is None or t.ge <= 7 else t.ge, True
        if t.ge is not None:
            yield "below minimum", t.ge - d, False
            yield "at minimum", t.ge, True
        if t.le is not None:
            yield "above maximum", t.le + d, False
            yield "at maximum", t.le, True
    elif isinstance(t, mi.StrType):
        yield "number", 7, False
        yield "array", ["x"], False
        if t.pattern:
            if re.search(t.pattern, "?!") is None:
                yield "bad pattern", "?!", False
            yield "with NUL", "A\x00B", False  # no pattern admits NUL (PostgreSQL cannot store it)
            ok = (re.search(t.pattern, "A\x1b[2JB") is not None
                  and (t.max_length is None or t.max_length >= 6))
            yield "with ESC", "A\x1b[2JB", ok
        if t.min_length:
            yield "empty", "", False
        if t.max_length is not None:
            yield "too long", "A" * (t.max_length + 1), False
            if t.pattern is None or re.search(t.pattern, "A" * t.max_length):
                yield "longest", "A" * t.max_length, True
    elif isinstance(t, mi.LiteralType):
        for v in t.values:
            yield f"enum {v!r}", v, True
        strings = all(isinstance(v, str) for v in t.values)
        yield "bad enum", "NotAValue" if strings else max(v for v in t.values if isinstance(v, int)) + 1, False
        yield "wrong type", 1 if strings else str(t.values[0]), False
    elif isinstance(t, mi.ListType):
        yield "object", {}, False
        yield "empty", [], not t.min_length
        item = t.item_type
        yield "item of wrong type", ["x"] if not isinstance(item, mi.StrType) else [7], False
        if isinstance(item, mi.StrType) and item.pattern:
            yield "item with bad pattern", ["?!"], False
    elif isinstance(t, mi.StructType):
        yield "array", [], False
        yield "string", "x", False
    elif isinstance(t, mi.BoolType):
        yield "true", True, True
        yield "false", False, True
        yield "string", "true", False
        yield "number", 1, False
    else:
        raise AssertionError(f"no mutations for {t!r}: teach field_values this type")


@pytest.mark.parametrize("event_type", TYPES)
def test_every_field_mutation_is_judged_alike(event_type: str) -> None:
    """Drop, null, wrong type, out of range, bad enum, bad pattern, too long, extra field."""
    doc = example_doc(event_type)
    cases: list[tuple[str, bytes, bool | None]] = []
    done: set[type] = set()
    for path, struct in struct_nodes(doc["data"], mi.type_info(BODY_OF_TYPE[event_type]), ()):
        if struct.cls in done:
            continue
        done.add(struct.cls)
        where = ("data", *path)
        cases.append((f"{where} + unknown field", mutated(doc, where, "x_vendor", {"a": [1, None]}), True))
        for f in struct.fields:
            for what, value, valid in field_values(f):
                cases.append((f"{where}.{f.encode_name}: {what}", mutated(doc, where, f.encode_name, value), valid))
    assert_all_agree(cases)


def envelope_cases(event_type: str) -> Iterator[tuple[str, bytes, bool]]:
    doc = example_doc(event_type)
    system = event_type in SYSTEM_TYPES
    for key in doc:
        yield f"drop {key}", mutated(doc, (), key, ABSENT), False
        yield f"{key}: null", mutated(doc, (), key, None), False
        yield f"{key}: number", mutated(doc, (), key, 12345), False
        yield f"{key}: array", mutated(doc, (), key, ["x"]), False
    bad = {
        "specversion": ["1.1", "0.3", "1"],
        "id": ["B02C287D-3815-5F56-B43D-0720C7BB5992", "b02c287d38155f56b43d0720c7bb5992", "x"],
        "source": ["Burnin-03", "burnin 03", "", "-burnin", "a" * 65] + ([] if system else ["linetrace"]),
        "type": ["unit.teleported", "unit", "Unit.Arrived", next(t for t in TYPES if t != event_type)],
        "time": ["2025-04-03T08:15:30+02:00", "2025-04-03T08:15:30.250+00:00", "2025-04-03 08:15:30Z",
                 "2025-04-03T08:15:30.1234567890Z", "2025-04-03", "2025-04-03T08:15Z"],
        "subject": ["", "S" * 129, "SRV-1\n", "SRV 1", "SRV-\x1b[2J", "-SRV", "SRV\u202e1"],
        "datacontenttype": ["application/cloudevents+json", "text/json"],
        "dataschema": [dataschema_of(event_type, 2), dataschema_of(event_type) + "x",
                       f"urn:linetrace:schema:{event_type}"],
        "stationseq": ["174366813025000", "17436681302500000", "000000000000000a", "-000000000000001"],
    }
    for key, values in bad.items():
        for v in values:
            yield f"{key}: {v!r}", mutated(doc, (), key, v), False
    good = {
        "time": ["2025-04-03T08:15:30Z", "2025-04-03T08:15:30.123456789Z"],
        "subject": ["S" * 128, "x", "LOT:2025/04-7_b"],
        "source": [] if system else ["a" * 64, "0", "ict-02.cell_b"],
        "stationseq": [] if system else ["0000000000000000", "0000000000000001"],
    }
    for key, values in good.items():
        for v in values:
            yield f"{key}: {v!r}", mutated(doc, (), key, v), True
    # times long ago are fine (never refused for time alone), with a stationseq not ahead of them
    early = doc if system else {**doc, "stationseq": "0000000000000001"}
    for v in ("1999-12-31T23:59:59.9Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        yield f"time: {v!r}", mutated(early, (), "time", v), True
    yield "extra envelope attribute", mutated(doc, (), "traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"), False
    yield "extra envelope attribute", mutated(doc, (), "partitionkey", doc["subject"]), False
    yield "data is a string", mutated(doc, (), "data", json.dumps(doc["data"])), False
    if system:
        yield "system event with stationseq", mutated(doc, (), "stationseq", "0000000000000001"), False
        yield "system event from a station", mutated(doc, (), "source", "burnin-03"), False
    else:
        yield "station event from source linetrace", mutated(doc, (), "source", "linetrace"), False


@pytest.mark.parametrize("event_type", TYPES)
def test_every_envelope_mutation_is_judged_alike(event_type: str) -> None:
    assert_all_agree(list(envelope_cases(event_type)))


def test_an_unknown_type_is_refused_by_decoder_and_every_schema() -> None:
    doc = example_doc("unit.arrived")
    doc.update(type="unit.teleported", dataschema="urn:linetrace:schema:unit.teleported:v1")
    assert decode_error_code(encode(doc)) == "event.unknown_type"
    assert_all_agree([("unknown type", encode(doc), False)])


# --- random mutations (hypothesis) ----------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=20).filter(
    lambda s: "\n" not in s and (not re.search(RFC3339_UTC, s) or _parses(s))
)


def _parses(s: str) -> bool:
    try:
        datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


_scalars = st.none() | st.booleans() | st.integers() | _text | st.floats(
    allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_text, inner, max_size=3), max_leaves=6)
_extra_key = st.from_regex(r"x_[a-z]{1,8}", fullmatch=True)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield path + (k,)
        yield from _paths(v, path + (k,))


_PATHS = {t: list(_paths(example_doc(t))) for t in TYPES}
_FAST = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@_FAST
@given(st.sampled_from(TYPES).flatmap(lambda t: st.tuples(st.just(t), st.sampled_from(_PATHS[t]))), _json)
def test_any_value_anywhere_is_judged_alike(where: tuple[str, tuple[Any, ...]], value: Any) -> None:
    event_type, path = where
    doc = example_doc(event_type)
    failure = judge(f"{event_type} {path} = {value!r}", mutated(doc, path[:-1], path[-1], value), None)
    assert failure is None, failure


@_FAST
@given(st.sampled_from(TYPES), st.data())
def test_unknown_fields_and_omitted_optional_fields_are_accepted(event_type: str, data: st.DataObject) -> None:
    doc = example_doc(event_type)
    nodes = list(struct_nodes(doc["data"], mi.type_info(BODY_OF_TYPE[event_type]), ()))
    chosen = data.draw(st.lists(st.sampled_from(nodes), min_size=1, max_size=4))
    for path, struct in sorted(chosen, key=lambda n: -len(n[0])):  # children before parents
        node = doc["data"]
        for step in path:
            node = node[step]
        node[data.draw(_extra_key)] = data.draw(_json)
        for f in struct.fields:
            if not f.required and data.draw(st.booleans()):
                node.pop(f.encode_name, None)
    failure = judge(event_type, encode(doc), True)
    assert failure is None, failure


# --- what JSON Schema cannot say ----------------------------------------------------------


def test_duplicate_keys_are_refused_by_the_decoder_though_no_schema_can_see_them() -> None:
    value = example_event("unit.arrived")
    for dup in (value.replace(b'"data":', b'"subject":"SRV-S7-999999","data":'),
                value.replace(b'"lane":1', b'"lane":1,"lane":2')):
        assert decode_error_code(dup) == "event.duplicate_keys"
        assert schema_verdict(dup) is None  # the parsed document keeps one of them: valid


def test_integers_written_with_a_fraction_or_exponent_are_refused_though_schemas_allow_them() -> None:
    """JSON Schema's `integer` is a value (60.0 == 60); msgspec also checks how it is written."""
    for old, new in ((b'"step":60', b'"step":60.0'), (b'"step":60', b'"step":6e1')):
        value = example_event("unit.arrived").replace(old, new)
        assert decode_error_code(value) == "event.invalid"
        assert schema_verdict(value) is None
    value = example_event("station.state").replace(b'"state":1000', b'"state":1000.0')
    assert decode_error_code(value) == "event.invalid" and schema_verdict(value) is None


def test_a_stationseq_far_ahead_of_its_time_is_refused_though_schemas_allow_it() -> None:
    """The bound ties two attributes together (STATIONSEQ_LEAD_US): no JSON Schema can say it."""
    doc = example_doc("unit.arrived")
    for seq in ("9999999999999999", f"{EXAMPLE_STATIONSEQ + STATIONSEQ_LEAD_US + 1:016d}"):
        value = encode({**doc, "stationseq": seq})
        assert decode_error_code(value) == "seq.ahead_of_time"
        assert schema_verdict(value) is None
    value = encode({**doc, "stationseq": f"{EXAMPLE_STATIONSEQ + STATIONSEQ_LEAD_US:016d}"})
    assert decoder_verdict(value) is None


def test_json_nested_deeper_than_the_limit_is_refused_though_schemas_allow_it() -> None:
    for lists, refused in ((MAX_JSON_DEPTH - 2, False), (MAX_JSON_DEPTH - 1, True), (5000, True)):
        # the envelope is level 1, `data` level 2, then `lists` nested arrays in a vendor field
        value = example_event("unit.arrived").replace(
            b'"data":{', b'"data":{"x_vendor":' + b"[" * lists + b"]" * lists + b",", 1)
        assert (decoder_verdict(value) is not None) is refused, lists
        if refused:
            assert decode_error_code(value) == "event.not_json"
        if lists < 100:
            assert schema_verdict(value) is None


# --- bounds the ledger can store ------------------------------------------------------------


def _leaf_types(t: mi.Type) -> Iterator[mi.Type]:
    if isinstance(t, mi.StructType):
        for f in t.fields:
            yield from _leaf_types(f.type)
    elif isinstance(t, mi.UnionType):
        for inner in t.types:
            yield from _leaf_types(inner)
    elif isinstance(t, mi.ListType):
        yield from _leaf_types(t.item_type)
    else:
        yield t


@pytest.mark.parametrize("event_type", TYPES)
def test_every_integer_and_string_has_a_bound_the_databases_can_store(event_type: str) -> None:
    """Item 1: no value passes admission that a bigint or a bounded column cannot hold."""
    for t in _leaf_types(mi.type_info(BODY_OF_TYPE[event_type])):
        if isinstance(t, mi.IntType):
            assert t.ge is not None and t.le is not None and -INT64_MAX - 1 <= t.ge <= t.le <= INT64_MAX
        if isinstance(t, mi.StrType):
            unbounded = t.pattern is None or re.search(r"[*+]|\{\d*,\}", re.sub(r"\[[^\]]*\]", "", t.pattern))
            fixed = not unbounded  # the pattern alone bounds the length
            assert t.max_length is not None or fixed, t
            assert t.pattern is not None and re.search(t.pattern, "a\x00b") is None, t


#: Body field -> the ledger column a projection stores it in.
COLUMNS = {
    ("work.started", "operation"): "operations.operation",
    ("work.started", "operator"): "operations.operator",
    ("work.started", "work_order"): "units.work_order",
    ("work.started", "product"): "units.product",
    ("work.started", "step"): "units.step",
    ("materials.installed", "items.lot"): "installs.lot",
    ("materials.installed", "items.mpn"): "installs.mpn",
    ("materials.installed", "items.category"): "installs.category",
    ("materials.installed", "items.pn"): "installs.pn",
    ("materials.installed", "items.serial"): "installs.serial",
    ("materials.installed", "items.parent"): "installs.parent",
    ("materials.installed", "items.ref"): "installs.ref",
    ("materials.installed", "items.qty"): "installs.qty",
    ("materials.installed", "items.slot"): "installs.slot",
    ("unit.tested", "tests.name"): "measurements.test",
    ("unit.tested", "tests.measurements.name"): "measurements.name",
    ("unit.tested", "tests.measurements.unit"): "measurements.unit",
    ("firmware.flashed", "component"): "firmware.component",
    ("firmware.flashed", "image"): "firmware.image",
    ("firmware.flashed", "version"): "firmware.version",
    ("firmware.flashed", "target"): "firmware.target",
    ("unit.packed", "order"): "units.order",
    ("unit.packed", "carton"): "units.carton",
    ("material.received", "lot"): "lots.lot",
    ("material.received", "mpn"): "lots.mpn",
    ("material.received", "supplier"): "lots.supplier",
    ("material.received", "date_code"): "lots.date_code",
    ("material.received", "qty"): "lots.qty",
    ("material.received", "serials"): "lot_serials.serial",
    ("station.enrolled", "station_id"): "stations.station_id",
    ("station.enrolled", "station_type"): "stations.station_type",
}


def _field(event_type: str, path: str) -> mi.Type:
    t: mi.Type = mi.type_info(BODY_OF_TYPE[event_type])
    for name in path.split("."):
        while isinstance(t, (mi.ListType, mi.UnionType)):
            t = t.item_type if isinstance(t, mi.ListType) else next(
                x for x in t.types if not isinstance(x, mi.NoneType))
        assert isinstance(t, mi.StructType)
        t = next(f.type for f in t.fields if f.name == name)
    while isinstance(t, (mi.ListType, mi.UnionType)):
        t = t.item_type if isinstance(t, mi.ListType) else next(
            x for x in t.types if not isinstance(x, mi.NoneType))
    return t


@pytest.mark.parametrize("where,column", sorted(COLUMNS.items()))
def test_every_projected_value_fits_its_column_on_postgresql(where: tuple[str, str], column: str) -> None:
    from sqlalchemy import BigInteger, Integer, String

    from linetrace.ledger.models import Base, load_all_tables

    load_all_tables()
    table, name = column.split(".")
    col = Base.metadata.tables[table].c[name]
    t = _field(*where)
    if isinstance(col.type, String):
        assert isinstance(t, mi.StrType) and t.max_length is not None
        assert col.type.length is not None and t.max_length <= col.type.length, (t, col.type)
    elif isinstance(col.type, (Integer, BigInteger)):
        assert isinstance(t, mi.IntType) and t.le is not None and t.ge is not None
        top = INT64_MAX if isinstance(col.type, BigInteger) else INT32_MAX
        assert -top - 1 <= t.ge and t.le <= top, (t, col.type)
    else:
        raise AssertionError(f"teach this test {col.type!r}")


def test_the_envelope_fits_the_events_table() -> None:
    from linetrace.ledger.models import EventRow

    envelope = {f.name: f.type for f in mi.type_info(Envelope).fields}  # type: ignore[union-attr]
    for name, column in (("subject", EventRow.subject), ("source", EventRow.source),
                         ("id", EventRow.event_id)):
        t = envelope[name]
        assert isinstance(t, mi.StrType)
        longest = t.max_length or len("x" * 64 if name == "source" else "x" * 36)
        assert longest <= column.type.length, name  # type: ignore[attr-defined]


# --- events already in the ledger are read as they were admitted ------------------------------


@pytest.mark.parametrize("event_type", TYPES)
def test_stored_events_decode_to_the_same_event_as_admission(event_type: str) -> None:
    value = example_event(event_type)
    assert decode_stored_event(value) == decode_event(value)


@pytest.mark.parametrize("change", [
    ("materials.installed", b'"qty":32', b'"qty":1099511627776'),
    ("material.received", b'"qty":', b'"qty":9223372036854775808,"x_old":'),
    ("unit.arrived", b'"subject":"SRV-S7-000001"', b'"subject":"SRV S7\\n"'),
    ("work.started", b'"operation":"baseboard + GPU install"', b'"operation":"' + b"x" * 5000 + b'"'),
    ("unit.arrived", f'"stationseq":"{EXAMPLE_STATIONSEQ:016d}"'.encode(), b'"stationseq":"9999999999999999"'),
])
def test_stored_events_admitted_under_looser_rules_stay_readable(change: tuple[str, bytes, bytes]) -> None:
    """v1 had no upper bounds and no subject pattern: such stored events must still decode."""
    event_type, old, new = change
    value = example_event(event_type).replace(old, new, 1)
    assert value != example_event(event_type)
    with pytest.raises(MalformedEvent):
        decode_event(value)
    event = decode_stored_event(value)
    assert type(event.body) is BODY_OF_TYPE[event_type] and event.value == value
    assert type(event.envelope) is Envelope


def test_stored_event_decoding_still_refuses_what_is_not_an_event() -> None:
    for bad in (b"{}", b"not json", example_event("unit.arrived").replace(b'"step":60', b'"step":"x"')):
        with pytest.raises(MalformedEvent):
            decode_stored_event(bad)


# --- decoder edge cases where Python and JSON Schema semantics could drift ----------------

_NEWLINE = [("stationseq", "unit.arrived"), ("source", "unit.arrived"), ("id", "unit.arrived"),
            ("time", "unit.arrived")]


@pytest.mark.parametrize("key,event_type", _NEWLINE + [("data.order", "unit.packed")])
def test_a_trailing_newline_is_refused_by_both(key: str, event_type: str) -> None:
    doc = example_doc(event_type)
    node = doc["data"] if key.startswith("data.") else doc
    name = key.removeprefix("data.")
    node[name] += "\n"
    assert_all_agree([(f"{key} + newline", encode(doc), False)])


def test_a_system_event_with_a_null_stationseq_is_refused_by_both() -> None:
    doc = example_doc("station.enrolled")
    doc["stationseq"] = None
    assert_all_agree([("system event with stationseq null", encode(doc), False)])


@pytest.mark.parametrize("time", ["2025-02-30T08:00:00Z", "2025-13-01T08:00:00Z", "2025-04-03T24:00:00Z"])
def test_an_impossible_time_is_refused_by_both(time: str) -> None:
    doc = example_doc("unit.arrived")
    doc["time"] = time
    assert_all_agree([(f"time {time}", encode(doc), False)])


@pytest.mark.parametrize("old,new", [(b'"step":60', b'"step":NaN'), (b'"step":60', b'"step":-Infinity'),
                                     (b'"SRV-S7-000001"', b'"SRV-\\ud800"')])
def test_non_json_numbers_and_lone_surrogates_are_malformed_events(old: bytes, new: bytes) -> None:
    assert decode_error_code(example_event("unit.arrived").replace(old, new)) == "event.not_json"


# --- the documents ------------------------------------------------------------------------


def test_docs_errors_lists_exactly_the_codes_with_their_topic() -> None:
    text = (ROOT / "docs" / "errors.md").read_text()
    codes = text.split("## The codes", 1)[1]
    rows = dict(re.findall(r"^\| `([a-z0-9_]+\.[a-z0-9_]+)` \| ([^|]+?) \|", codes, re.M))
    assert set(rows) == set(DLQ_CODES) | set(QUARANTINE_CODES)
    assert all("dlq" in rows[c] for c in DLQ_CODES)
    assert all("line.quarantine" in rows[c] for c in QUARANTINE_CODES)
    for header in ("error.code", "error.message", "error.stage", "original.topic",
                   "original.partition", "original.offset"):
        assert f"`{header}`" in text


def _readme() -> str:
    return (ROOT / "schemas" / "README.md").read_text()


def test_readme_has_every_type_with_its_topic_and_schema_file() -> None:
    text = _readme()
    for t in TYPES:
        row = rf"^\| `{re.escape(t)}` \| `{TOPIC_OF_TYPE[t]}` \|.*`json/{re.escape(generator.schema_file_name(t))}`"
        assert re.search(row, text, re.M), f"schemas/README.md has no row for {t}"


def test_readme_python_example_builds_events_ingest_accepts_with_valid_signatures(tmp_path: Path) -> None:
    need(importlib.util.find_spec("aiokafka") is not None, "aiokafka (the [station] extra)")
    (code,) = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    nodes = list(ast.walk(ast.parse(code)))
    imported = {(n.module or "").split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom)}
    imported |= {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
    assert imported <= set(sys.stdlib_module_names) | {"aiokafka", "cryptography", "__future__"}
    ns: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(code, "schemas/README.md", "exec"), ns)
    key_file = tmp_path / "station.pem"
    key_file.write_bytes(private_key_pem(generate_key()))
    key = ns["load_key"](str(key_file))
    seqs = [ns["next_stationseq"](tmp_path / "seq") for _ in range(3)]
    assert seqs == sorted(set(seqs))
    value = ns["build_event"]("burnin-03", "station.state", "burnin-03", {"state": 1000}, seqs[-1])
    event = decode_event(value)
    assert event.seq == seqs[-1]
    headers = dict(ns["headers_for"](value, key))
    assert headers["linetrace-keyid"].decode() == keyid_of(key.public_key())
    verify_value(value, base64.b64decode(headers["linetrace-signature"]), key.public_key())
    assert headers["content-type"] == b"application/cloudevents+json"
