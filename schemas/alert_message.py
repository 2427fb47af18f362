"""The `line.alerts` alert-state message and its published JSON Schema
(`schemas/json/alerts/alert.state.v1.schema.json`), generated from `AlertMessage`, never
edited.

One message per transition of an alert (raised, cleared, acknowledged, shelved, ...), written
by the alert engine (`linetrace.ledger.alerts.messages`) through the outbox. The plant-signed
`alert.*` system events that record operators' actions travel on the same topic as
CloudEvents (`content-type: application/cloudevents+json`); alert-state messages carry
`content-type: application/json`. docs/alerts.md explains every field.

    python -m linetrace.schemas.alert_message --write   # (re)write the schema file
    python -m linetrace.schemas.alert_message --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .jsonschema import DRAFT, _walk, render, stale_files, write_files
from .topics import ALERTS, OUTPUT_TOPICS

SOURCE_DIR = Path(__file__).resolve().parent / "json" / "alerts"
FILE_NAME = "alert.state.v1.schema.json"
SCHEMA_ID = "urn:linetrace:alert.state:v1"

#: The ISA-18.2 states (the same list as `linetrace.ledger.alerts.conditions.STATES`).
AlertState = Literal["normal", "unacknowledged", "acknowledged", "rtn_unacknowledged",
                     "shelved", "suppressed", "out_of_service"]
#: Every transition the engine records.
Transition = Literal["raised", "suppressed", "annunciated", "cleared", "acknowledged",
                     "shelved", "unshelved", "shelve_expired", "out_of_service",
                     "returned_to_service", "commented"]
Time = Annotated[str, msgspec.Meta(
    pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z",
    description="RFC 3339 UTC with milliseconds")]


class AlertMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """An alert after one of its transitions (the `linetrace alerts --json` shape plus what
    the transition was)."""

    id: Annotated[str, msgspec.Meta(pattern=r"^AL-[0-9a-f]{12}\Z",
                                    description="AL- + 12 hex of SHA-256(condition NUL "
                                    "subject)")]
    condition: str
    subject: str
    priority: Literal["low", "medium", "high"]
    state: AlertState
    occurrences: Annotated[int, msgspec.Meta(ge=0)]
    raised: Time
    updated: Time
    message: str
    action: str
    active: bool
    acknowledged: bool
    chattering: bool
    latched: bool
    shelved_until: Time | None
    cleared: Time | None
    unit: str | None
    station: str | None
    lot: str | None
    parent: str | None
    transition: Transition
    occurrence: Annotated[int, msgspec.Meta(ge=0)]
    time: Time
    cause: str
    details: dict[str, Any]
    by: str | None
    note: str | None


_HEADERS = {
    "linetrace-message-id": "UTF-8: UUIDv5 of (alert id, occurrence, transition, cause); "
    "identical on a re-send or a replay. De-duplicate on it.",
    "content-type": "application/json",
}


def build_schema() -> dict[str, Any]:
    (_,), components = msgspec.json.schema_components([AlertMessage],
                                                      ref_template="#/$defs/{name}")
    root = components.pop(AlertMessage.__name__)
    root.pop("title", None)
    root.pop("description", None)
    spec = next(t for t in OUTPUT_TOPICS if t.name == ALERTS)
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "alert.state v1",
        "description": "One transition of one ISA-18.2 alert, as the alert engine publishes it "
        "on line.alerts (docs/alerts.md). Later versions only add fields; unknown fields must "
        "be ignored.",
        "x-topic": ALERTS,
        "x-partitions": spec.partitions,
        "x-key": "the alert id, as UTF-8 bytes: one alert, one partition, in order",
        "x-headers": _HEADERS,
        **_walk(root),
    }
    if components:
        schema["$defs"] = {name: _walk(components[name]) for name in sorted(components)}
    return schema


def build_all() -> dict[str, str]:
    return {FILE_NAME: render(build_schema())}


def check() -> list[str]:
    """What differs between the published file and the generator (empty when up to date)."""
    return stale_files(SOURCE_DIR, build_all())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linetrace.schemas.alert_message",
                                     description="Generate or check the line.alerts schema.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_files(SOURCE_DIR, build_all()):
            print(f"wrote {path}")
        return 0
    problems = check()
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
