"""The published JSON Schemas (draft 2020-12): one file per event type, generated, never edited.

Each file describes the complete CloudEvent a station sends (closed envelope + `data`), so a
vendor validating in any language refuses exactly what ingest would dead-letter. The body part
comes from the msgspec models in `bodies.py`, the envelope part from `envelope.Envelope`; a
unit test checks, case by case, that decoder and schema agree.

    python -m linetrace.schemas.jsonschema --write   # regenerate schemas/json/*.json
    python -m linetrace.schemas.jsonschema --check   # exit 1 if a file is stale
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from .bodies import BODY_OF_TYPE, SYSTEM_TYPES
from .envelope import (
    DATACONTENTTYPE,
    SCHEMA_VERSIONS,
    SPECVERSION,
    SYSTEM_SOURCE,
    Envelope,
    dataschema_of,
)
from .examples import example_event
from .topics import INPUT_TOPICS, OUTPUT_TOPICS, TOPIC_OF_TYPE

JsonObject = dict[str, Any]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
PACKAGE = "linetrace.schemas"
SOURCE_DIR = Path(__file__).resolve().parent / "json"

#: msgspec refuses numbers that overflow an IEEE-754 double (`1e400`); JSON Schema's numbers are
#: unbounded, so every unbounded `number` gets these limits to say the same.
DOUBLE_MAX = 1.7976931348623157e308

#: What each event means (DOMAIN.md §2), the `description` of its schema.
DESCRIPTIONS: dict[str, str] = {
    "unit.arrived": "A unit arrived at a station for a route step (CFX UnitsArrived).",
    "unit.departed": "A unit left a station after a route step (CFX UnitsDeparted).",
    "work.started": "Work on a unit started at a step: transaction, work order, product, "
    "recipe and operator (CFX WorkStarted).",
    "work.completed": "Work on a unit ended at a step with a result: Completed, Failed, "
    "Aborted or Skipped (CFX WorkCompleted).",
    "unit.inspected": "Result of a Human, AOI or AXI inspection with its defects "
    "(CFX UnitsInspected).",
    "unit.tested": "Result of an ICT, FCT, boundary-scan or burn-in test with every "
    "measurement and its limits (CFX UnitsTested).",
    "materials.installed": "Parts installed into a unit: lot always, serial for serialized "
    "parts (else qty), MPN, slot or reference designator, parent part (CFX MaterialsInstalled).",
    "materials.uninstalled": "Parts removed from a unit, with the reason and the defect that "
    "caused it (CFX MaterialsUninstalled).",
    "unit.repaired": "Outcome of a repair and the step the unit returns to (CFX UnitsRepaired).",
    "unit.scrapped": "A unit was scrapped, with the reason (CFX UnitsDisqualified).",
    "firmware.flashed": "A firmware image flashed onto one component of a unit, with the "
    "SHA-256 of the image (compared with the golden baseline).",
    "unit.packed": "The pack station packed a unit: tamper seal, carton and order. linetrace "
    "answers with unit.sealed.",
    "unit.shipped": "The shipping dock shipped a unit: order, carton, shipment, destination.",
    "material.received": "A lot was received: MPN, supplier, date code, quantity, serials of a "
    "serialized lot and hashes of its CoC and traceability documents.",
    "burnin.telemetry": "One burn-in telemetry sample per GPU present in the unit, once per "
    "sample interval (normally one second); the unit's heartbeat during burn-in.",
    "burnin.xid": "An NVIDIA XID error reported by one GPU during burn-in.",
    "burnin.run": "Start or end of a burn-in run: GPU inventory, driver, VBIOS, temperature "
    "thresholds and enforced power limit.",
    "station.state": "A station's SEMI E10 state: 1000 PRD, 2000 SBY, 3000 ENG, 4000 SDT, "
    "5000 USD, 6000 NST.",
    "fault.occurred": "A station fault was raised (CFX FaultOccurred).",
    "fault.cleared": "A station fault was cleared (CFX FaultCleared).",
    "station.enrolled": "System event (authored only by linetrace): a station's Ed25519 public "
    "key and its key id were enrolled.",
    "station.revoked": "System event (authored only by linetrace): a station key was revoked; "
    "events it signed stay valid up to the last stationseq per topic in `last_valid`.",
    "material.checked": "System event (authored only by linetrace): a received lot checked "
    "against the approved vendor list (MPN -> approved suppliers), Passed or Failed with why.",
    "unit.sealed": "System event (authored only by linetrace) after unit.packed: SHA-256 of the "
    "unit's frozen CycloneDX HBOM and the leaf hash of its previous ledger leaf.",
    "burnin.verdict": "System event (authored only by linetrace) on line.events: linetrace's "
    "verdict on one burn-in run (DOMAIN.md hard-fail rules), with every reason, per-GPU figures "
    "and the SHA-256 commitment of the run's telemetry events.",
    "command.hold": "System event (authored only by linetrace) on line.commands, addressed to "
    "a station: do not start the unit anywhere until a command.release for it.",
    "command.release": "System event (authored only by linetrace) on line.commands, addressed "
    "to a station: a held unit may move again.",
    "command.route": "System event (authored only by linetrace) on line.commands, addressed to "
    "a station: send the unit to a step (the route's rework loop, or a person's disposition).",
    "command.lock": "System event (authored only by linetrace) on line.commands, addressed to "
    "the station it locks (or unlocks): a locked station starts no unit.",
    "hold.placed": "System event (authored only by linetrace) on line.holds: a hold on a unit, "
    "lot, MPN, work order or station, with reason, author and the units it held.",
    "hold.approved": "System event (authored only by linetrace) on line.holds: one quality "
    "user's signed approval to release a quality hold (a second one releases it).",
    "hold.released": "System event (authored only by linetrace) on line.holds: a hold ended, "
    "with the signed statements of the users who released it.",
    "hold.disposition": "System event (authored only by linetrace) on line.holds: the signed "
    "decision (scrap, use-as-is, repair) on a unit held for disposition.",
    "user.enrolled": "System event (authored only by linetrace) on line.holds: a person's "
    "Ed25519 public key and role, approved by an admin's signed statement.",
    "user.changed": "System event (authored only by linetrace) on line.holds: a user's "
    "role changed, signed by an admin.",
    "user.revoked": "System event (authored only by linetrace) on line.holds: a user's key "
    "revoked, signed by an admin.",
    "user.removed": "System event (authored only by linetrace) on line.holds: a user removed, "
    "signed by an admin.",
    "console.enrolled": "System event (authored only by linetrace) on line.holds: the web "
    "console's Ed25519 public key, enrolled by the plant; statements it signs attest that the "
    "signed-in user they name took a hold or alert action.",
    "console.revoked": "System event (authored only by linetrace) on line.holds: a console key "
    "revoked by the plant; its statements are refused from this point of the log on.",
    "alert.acknowledged": "System event (authored only by linetrace) on line.alerts: a user "
    "acknowledged an alert (ISA-18.2), with their signed statement and an optional comment.",
    "alert.shelved": "System event (authored only by linetrace) on line.alerts: a user shelved "
    "an alert until an expiry, for a reason, with their signed statement.",
    "alert.unshelved": "System event (authored only by linetrace) on line.alerts: a user ended "
    "an alert's shelve before its expiry, with their signed statement.",
    "alert.commented": "System event (authored only by linetrace) on line.alerts: a user's "
    "signed comment on an alert.",
    "alert.outofservice": "System event (authored only by linetrace) on line.alerts: a "
    "supervisor or admin took an alert out of service, for a reason, with their signed "
    "statement.",
    "alert.inservice": "System event (authored only by linetrace) on line.alerts: a "
    "supervisor or admin returned an out-of-service alert to service, with their signed "
    "statement.",
}

_ENVELOPE_NOTES: dict[str, str] = {
    "specversion": "CloudEvents version.",
    "id": "UUID (lower-case hex) of this event; a resend must repeat the exact same bytes.",
    "source": "Id of the enrolled station that authored the event.",
    "type": "Event type.",
    "time": "Event time, RFC 3339 in UTC with a `Z` suffix; 0 to 9 fractional digits.",
    "subject": "What the event is about; the Kafka record key is exactly its UTF-8 bytes.",
    "datacontenttype": "Media type of `data`.",
    "dataschema": "Names this schema (type and version).",
    "stationseq": "CloudEvents extension: exactly 16 decimal digits, zero-padded, strictly "
    "increasing per station and topic-partition; gaps are allowed.",
    "data": "The event body. Unknown extra fields are accepted (later versions only add "
    "optional fields); `null` is accepted wherever a field is optional.",
}

_KEYED_BY = {t.name: t.keyed_by for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)}
_PARTITIONS = {t.name: t.partitions for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)}


def schema_file_name(event_type: str) -> str:
    return f"{event_type}.v{SCHEMA_VERSIONS[event_type]}.schema.json"


def _walk(node: Any) -> Any:
    """Post-process msgspec's output into what a non-Python validator needs to say the same,
    in a form that does not depend on the msgspec version (`normalise`).

    - unbounded `number`s get the double range (see DOUBLE_MAX);
    - a pattern ending in Python's `\\Z` (end of string) is published with ECMA-262's `$`,
      which means the same there (Python's `$` also matches before a final newline).
    """
    return normalise(_for_validators(node))


def _for_validators(node: Any) -> Any:
    if isinstance(node, list):
        return [_for_validators(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _for_validators(v) for k, v in node.items()}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.endswith("\\Z"):
        out["pattern"] = pattern[:-2] + "$"
    if out.get("type") == "number":
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -DOUBLE_MAX
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = DOUBLE_MAX
    return out


def _envelope_properties(event_type: str) -> JsonObject:
    envelope = msgspec.json.schema(Envelope)["$defs"]["Envelope"]["properties"]
    system = event_type in SYSTEM_TYPES
    props: JsonObject = {
        "specversion": {"const": SPECVERSION},
        "id": {**envelope["id"], "format": "uuid"},
        "source": (
            {"const": SYSTEM_SOURCE}
            if system
            else {**envelope["source"], "not": {"const": SYSTEM_SOURCE}}
        ),
        "type": {"const": event_type},
        "time": {**envelope["time"], "format": "date-time"},
        "subject": envelope["subject"],
        "datacontenttype": {"const": DATACONTENTTYPE},
        "dataschema": {"const": dataschema_of(event_type)},
    }
    if not system:  # `str | None` or `str | UnsetType` in the model: the string branch
        seq = envelope["stationseq"]
        (props["stationseq"],) = [s for s in seq.get("anyOf", [seq]) if s.get("type") == "string"]
    props["data"] = {"$ref": f"#/$defs/{BODY_OF_TYPE[event_type].__name__}"}
    return {
        name: {"description": _ENVELOPE_NOTES[name], **_walk(spec)} for name, spec in props.items()
    }


def build_schema(event_type: str) -> JsonObject:
    """The JSON Schema of one event type as a complete CloudEvent."""
    body = BODY_OF_TYPE[event_type]
    (_,), components = msgspec.json.schema_components([body], ref_template="#/$defs/{name}")
    topic = TOPIC_OF_TYPE[event_type]
    system = event_type in SYSTEM_TYPES
    properties = _envelope_properties(event_type)
    key = f"the event's `subject` ({_KEYED_BY[topic]}); the Kafka key is its raw UTF-8 bytes"
    schema: JsonObject = normalise({
        "$schema": DRAFT,
        "$id": dataschema_of(event_type),
        "title": f"{event_type} v{SCHEMA_VERSIONS[event_type]}",
        "description": DESCRIPTIONS[event_type]
        + (
            " Source `linetrace`, no `stationseq`."
            if system
            else " Sent by a station, with the `stationseq` extension."
        ),
        "x-topic": topic,
        "x-partitions": _PARTITIONS[topic],
        "x-key": key,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        "$defs": {name: _walk(components[name]) for name in sorted(components)},
        "examples": [json.loads(example_event(event_type))],
    })
    return schema


def plain_text(description: str) -> str:
    """A description as published: the same whatever indentation or line wrapping the source
    docstring has and whichever msgspec version read it (older ones keep a docstring's
    indentation, newer ones strip it). Paragraphs stay apart; inside one, runs of whitespace
    (line breaks included) become one space."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(description))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


#: Keys whose values are instances (data), never schemas: their text is left as it is.
_DATA_KEYS = frozenset({"examples", "example", "const", "default", "enum"})
#: Keys whose values map names to schemas (a property may be *named* `description`).
_SCHEMA_MAPS = frozenset({"properties", "$defs", "patternProperties", "dependentSchemas"})
#: Keys whose branches may come in any order (msgspec versions order union branches apart).
_UNORDERED = frozenset({"anyOf", "oneOf"})


def normalise(node: Any) -> Any:
    """A schema in the form that does not depend on the msgspec version that produced it:
    every `description` (not the example data's) through `plain_text`; the branches of
    `anyOf`/`oneOf`, whose order means nothing, sorted by their canonical JSON."""
    if isinstance(node, list):
        return [normalise(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: JsonObject = {}
    for key, value in node.items():
        if key in _DATA_KEYS:
            out[key] = value
        elif key == "description" and isinstance(value, str):
            out[key] = plain_text(value)
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: normalise(s) for name, s in value.items()}
        elif key in _UNORDERED and isinstance(value, list):
            out[key] = sorted((normalise(b) for b in value),
                              key=lambda b: json.dumps(b, sort_keys=True))
        else:
            out[key] = normalise(value)
    return out


def render(schema: JsonObject) -> str:
    """The exact text of a schema file: `normalise`d, insertion key order, 2-space indent,
    final newline; the same whichever msgspec version built the schema."""
    return json.dumps(normalise(schema), indent=2, ensure_ascii=False) + "\n"


def build_all() -> dict[str, str]:
    """File name -> file text, for every event type and for the data files (routes)."""
    events = {schema_file_name(t): render(build_schema(t)) for t in BODY_OF_TYPE}
    return {**events, **_data_file_schemas()}


def _data_file_schemas() -> dict[str, str]:
    """Schemas of data files other than events, generated by their own modules (routes)."""
    from .routes.model import schema_files

    return schema_files()


def write_files(directory: Path, files: dict[str, str]) -> list[Path]:
    """Write each generated file (name -> text) whose text differs; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def stale_files(directory: Path, files: dict[str, str]) -> list[str]:
    """Each generated file (name -> text) missing from `directory` or differing there."""
    problems = []
    for name, text in files.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{name}: differs from the generated schema")
    return problems


def write(directory: Path = SOURCE_DIR) -> list[Path]:
    return write_files(directory, build_all())


def check(directory: Path = SOURCE_DIR) -> list[str]:
    """What differs between `directory` and the generator (empty when up to date)."""
    expected = build_all()
    problems = stale_files(directory, expected)
    for path in sorted(directory.glob("*.schema.json")):
        if path.name not in expected:
            problems.append(f"{path.name}: no event type generates it")
    return problems


def load_schema(event_type: str) -> JsonObject:
    """The published schema of `event_type`, read from the installed package data."""
    if event_type not in BODY_OF_TYPE:
        raise KeyError(f"unknown event type {event_type!r}")
    text = resources.files(PACKAGE).joinpath("json", schema_file_name(event_type)).read_text(
        encoding="utf-8"
    )
    schema: JsonObject = json.loads(text)
    return schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m linetrace.schemas.jsonschema",
        description="Generate or check the published JSON Schemas of linetrace events.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="(re)write the schema files")
    mode.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    parser.add_argument("--dir", type=Path, default=SOURCE_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.dir):
            print(f"wrote {path}")
        return 0
    problems = check(args.dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("run `make schemas` (python -m linetrace.schemas.jsonschema --write)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
