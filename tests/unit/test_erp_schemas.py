"""The ERP message schemas: generated from the models, valid, and FULL_TRANSITIVE compatible.

The compatibility rule (`linetrace.schemas.erp.compat`, docs/erp.md): a later version only adds
optional fields where the older object is open; nothing is removed, renamed, retyped, made
required or optional, and no constraint, closed enum or default changes. Only v1 exists today,
so the checker is exercised on candidate v2 models built the way a real v2 would be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec
import pytest
from msgspec import Meta

from linetrace.schemas.bodies import Id, Label, ShortId, StationId, Step, Text, Uuid
from linetrace.schemas.erp import (
    ERP_SCHEMA_VERSIONS, ERP_TYPES, MESSAGE_OF_TYPE, Component, ErpMessage, HoldNotice, Yield,
    decode_message, encode_message,
)
from linetrace.schemas.erp import compat, schema_files
from linetrace.schemas.erp.examples import example_message
from linetrace.schemas.erp.messages import Quantity, UnitOfMeasure

from .test_schemas import FORMATS, Validator

Schema = dict[str, Any]


def v1(message_type: str) -> Schema:
    return schema_files.load_erp_schema(message_type, 1)


def v2(message_type: str, model: type[ErpMessage]) -> Schema:
    return json.loads(schema_files.render(
        schema_files.build_erp_schema(message_type, model, version=2)))


def valid(schema: Schema, message: Any) -> bool:
    return not list(Validator(schema, format_checker=FORMATS).iter_errors(message))


# --- the published files -----------------------------------------------------------------------


def test_the_contract_names_exactly_five_message_types_each_with_serial_and_work_order() -> None:
    assert ERP_TYPES == ("erp.yield", "erp.goods_receipt", "erp.scrap", "erp.hold",
                         "erp.release")
    for t in ERP_TYPES:
        schema = v1(t)
        assert schema["properties"]["type"] == {"enum": [t]}
        assert {"type", "schema", "message_id", "cause", "time", "serial", "work_order"} <= set(
            schema["required"])
        assert schema["x-topic"] == "erp.outbound" and schema["x-partitions"] == 4


def test_the_published_files_are_exactly_what_the_models_generate() -> None:
    assert schema_files.check() == []
    expected = set(schema_files.build_all())
    assert {p.name for p in schema_files.SOURCE_DIR.glob("*.schema.json")} == expected
    run = subprocess.run([sys.executable, "-m", "linetrace.schemas.erp.schema_files", "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_every_published_version_is_full_compatible_with_every_earlier_one() -> None:
    published = schema_files.published()
    assert set(published) == set(ERP_TYPES)
    for t, versions in published.items():
        assert sorted(versions) == list(range(1, ERP_SCHEMA_VERSIONS[t] + 1))
        assert compat.transitive_problems(versions) == []


@pytest.mark.parametrize("message_type", ERP_TYPES)
def test_each_example_is_valid_for_its_schema_and_the_decoder(message_type: str) -> None:
    from jsonschema import Draft202012Validator

    schema = v1(message_type)
    Draft202012Validator.check_schema(schema)
    message = example_message(message_type)
    data = encode_message(message)
    assert decode_message(data) == message
    assert valid(schema, json.loads(data))
    assert schema["examples"] == [json.loads(data)]
    assert not valid(schema, {**json.loads(data), "serial": ""})
    assert not valid(schema, {k: v for k, v in json.loads(data).items() if k != "work_order"})


def test_a_decoder_of_v1_ignores_fields_it_does_not_know() -> None:
    data = json.loads(encode_message(example_message("erp.hold")))
    data["plant"] = "P-01"
    assert isinstance(decode_message(json.dumps(data).encode()), HoldNotice)
    assert valid(v1("erp.hold"), data)


# --- the checker on candidate v2 models ---------------------------------------------------------


class YieldWithPlant(Yield, kw_only=True, tag="erp.yield"):
    """v2 candidate: an optional field added (SAP plant)."""

    plant: Id | None = None


class ComponentWithSupplier(Component, kw_only=True):
    supplier: Id | None = None


class RemovedWithSupplier(ComponentWithSupplier, kw_only=True):
    reason: Id


class YieldNestedOptional(ErpMessage, kw_only=True, tag="erp.yield"):
    """v2 candidate: Yield with an optional field added inside its components."""

    step: Step
    operation: Label
    work_center: ShortId
    station: StationId
    transaction_id: Uuid
    result: Literal["Completed", "Skipped"]
    yield_qty: Quantity
    scrap_qty: Quantity
    unit_of_measure: UnitOfMeasure
    final_confirmation: bool
    operator: Id | None = None
    route_revision: Annotated[str, Meta(max_length=32)] | None = None
    components: list[ComponentWithSupplier]
    removed: list[RemovedWithSupplier]


def hold_v2(**change: Any) -> type[ErpMessage]:
    """A v2 candidate of erp.hold, as a real model: HoldNotice's own fields with some changed
    (None: removed); a field whose type admits null is optional (default null)."""
    fields: dict[str, Any] = {
        "hold_id": Id, "scope": Literal["unit", "lot", "mpn", "work_order", "station"],
        "target": Id, "reason": Text, "category": Literal["quality", "operational"],
        "code": ShortId, "placed_by": Id, "step": Step | None, "station": StationId | None}
    fields.update(change)
    spec: list[Any] = [(k, v, None) if type(None) in get_args(v) else (k, v)
                       for k, v in fields.items() if v is not None]
    return msgspec.defstruct("HoldNotice", spec, bases=(ErpMessage,), kw_only=True,
                             tag="erp.hold")


def test_the_v1_models_rebuilt_as_v2_are_compatible_with_v1() -> None:
    for t, model in MESSAGE_OF_TYPE.items():
        assert compat.problems(v1(t), v2(t, model)) == []


def test_an_optional_field_added_passes_both_ways_and_both_readers_accept_both() -> None:
    new = v2("erp.yield", YieldWithPlant)
    assert compat.problems(v1("erp.yield"), new) == []
    old_msg = json.loads(encode_message(example_message("erp.yield")))
    new_msg = {**old_msg, "plant": "1010"}
    assert valid(new, old_msg) and valid(v1("erp.yield"), new_msg)


def test_an_optional_field_added_inside_a_nested_object_passes() -> None:
    assert compat.problems(v1("erp.yield"), v2("erp.yield", YieldNestedOptional)) == []


def test_an_optional_hold_field_added_passes() -> None:
    assert compat.problems(v1("erp.hold"), v2("erp.hold", hold_v2(shift=Id | None))) == []


def test_a_removed_field_fails() -> None:
    problems = compat.problems(v1("erp.hold"), v2("erp.hold", hold_v2(placed_by=None)))
    assert problems == ["$.placed_by: field removed (or renamed); fields are never removed",
                        "$.placed_by: required field made optional (older readers require it)"]


def test_a_renamed_field_fails() -> None:
    problems = compat.problems(v1("erp.hold"),
                               v2("erp.hold", hold_v2(placed_by=None, author=Id)))
    assert "$.placed_by: field removed (or renamed); fields are never removed" in problems
    assert any(p.startswith("$.author: required field added") for p in problems)


def test_a_required_field_added_fails() -> None:
    problems = compat.problems(v1("erp.hold"), v2("erp.hold", hold_v2(note=Text)))
    assert problems == ["$.note: required field added (older messages lack it); new fields "
                        "must be optional"]


def test_a_changed_type_fails() -> None:
    problems = compat.problems(v1("erp.hold"), v2("erp.hold", hold_v2(target=int)))
    assert any(p.startswith("$.target: type changed") for p in problems), problems


def test_an_optional_field_made_required_fails() -> None:
    problems = compat.problems(v1("erp.hold"), v2("erp.hold", hold_v2(step=Step)))
    assert problems and all(p.startswith("$.step") for p in problems), problems


def test_a_widened_closed_enum_fails_because_old_readers_refuse_the_new_value() -> None:
    wider = Literal["quality", "operational", "safety"]
    new = v2("erp.hold", hold_v2(category=wider))
    problems = compat.problems(v1("erp.hold"), new)
    assert any("closed enum changed" in p for p in problems), problems
    msg = {**json.loads(encode_message(example_message("erp.hold"))), "category": "safety"}
    assert valid(new, msg) and not valid(v1("erp.hold"), msg)


def test_a_narrowed_constraint_fails_because_new_readers_refuse_old_messages() -> None:
    short = Annotated[str, Meta(min_length=1, max_length=16)]
    problems = compat.problems(v1("erp.hold"), v2("erp.hold", hold_v2(target=short)))
    assert any("constraint maxLength changed" in p for p in problems), problems


def test_a_field_added_to_a_closed_object_fails() -> None:
    old = v1("erp.hold")
    closed = {**old, "additionalProperties": False}
    grown = v2("erp.hold", hold_v2(shift=Id | None))
    problems = compat.problems(closed, {**grown, "additionalProperties": False})
    assert problems == ["$.shift: field added to a closed object (older readers refuse unknown "
                        "fields there)"]


def test_transitive_checks_every_earlier_version_not_only_the_previous() -> None:
    versions = {1: v1("erp.hold"), 2: v2("erp.hold", hold_v2(shift=Id | None)),
                3: v2("erp.hold", hold_v2(shift=Id | None, placed_by=None))}
    problems = compat.transitive_problems(versions)
    assert any(p.startswith("v1 -> v3: $.placed_by: field removed") for p in problems)
    assert any(p.startswith("v2 -> v3: $.placed_by: field removed") for p in problems)
    assert not any(p.startswith("v1 -> v2") for p in problems)


def test_check_refuses_an_incompatible_new_version_and_a_missing_earlier_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in schema_files.build_all():
        (tmp_path / name).write_text((schema_files.SOURCE_DIR / name).read_text())
    monkeypatch.setitem(ERP_SCHEMA_VERSIONS, "erp.hold", 2)
    monkeypatch.setitem(MESSAGE_OF_TYPE, "erp.hold", hold_v2(shift=Id | None))
    assert schema_files.check(tmp_path) == ["erp.hold.v2.schema.json: missing"]
    schema_files.write(tmp_path)
    assert schema_files.check(tmp_path) == []  # v1 published, v2 compatible with it

    monkeypatch.setitem(MESSAGE_OF_TYPE, "erp.hold", hold_v2(placed_by=None))
    assert schema_files.check(tmp_path) == ["erp.hold.v2.schema.json: differs from the "
                                            "generated schema"]
    schema_files.write(tmp_path)
    problems = schema_files.check(tmp_path)
    assert problems and all(p.startswith("erp.hold v1 -> v2: $.placed_by") for p in problems)

    (tmp_path / "erp.hold.v1.schema.json").unlink()
    assert "erp.hold.v1.schema.json: missing (earlier versions stay published)" in (
        schema_files.check(tmp_path))
