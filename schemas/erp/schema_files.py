"""The published JSON Schemas of the ERP messages: `schemas/json/erp/<type>.v<N>.schema.json`.

The current version of each type is generated from its model (`messages.py`), never edited;
files of earlier versions stay as they were published (they are what older readers hold), and
every version must be FULL compatible with each earlier one (`compat.py`).

    python -m linetrace.schemas.erp.schema_files --write   # (re)write the current versions
    python -m linetrace.schemas.erp.schema_files --check   # exit 1 if stale or incompatible
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from ..jsonschema import DRAFT, _walk, render, stale_files, write_files
from ..topics import ERP_OUTBOUND, OUTPUT_TOPICS
from . import compat
from .examples import example_message
from .messages import ERP_SCHEMA_VERSIONS, MESSAGE_OF_TYPE, ErpMessage, encode_message, schema_urn

Schema = dict[str, Any]

PACKAGE = "linetrace.schemas.json.erp"
SOURCE_DIR = Path(__file__).resolve().parent.parent / "json" / "erp"
_FILE = re.compile(r"^(erp\.[a-z_]+)\.v([1-9][0-9]*)\.schema\.json\Z")

DESCRIPTIONS: dict[str, str] = {
    "erp.yield": "Yield confirmation of one unit at one reporting step of its route (SAP "
    "production order confirmation / SAP ME yield per SFC), with the components installed "
    "since its previous confirmation (backflush).",
    "erp.goods_receipt": "Goods receipt (movement type 101) of a finished server at pack, the "
    "last production step, with every part as built (serials and lots), from its sealed HBOM.",
    "erp.scrap": "A unit scrapped, with the reason and the step it was scrapped at.",
    "erp.hold": "A hold stops this unit: hold id, what is held, reason and category.",
    "erp.release": "A hold on this unit ended (released, or a disposition's decision).",
}

_HEADERS = {
    "linetrace-message-id": "UTF-8: the message's `message_id`; identical on a re-send. "
    "De-duplicate on it.",
    "linetrace-type": "UTF-8: the message's `type`.",
    "content-type": "application/json",
}


def file_name(message_type: str, version: int | None = None) -> str:
    return f"{message_type}.v{version or ERP_SCHEMA_VERSIONS[message_type]}.schema.json"


def build_erp_schema(message_type: str, model: type[ErpMessage] | None = None,
                     version: int | None = None) -> Schema:
    """The JSON Schema (draft 2020-12) of a message type, from its model (the current one, or
    `model` as version `version`: how tests build candidate versions)."""
    model = model or MESSAGE_OF_TYPE[message_type]
    version = version or ERP_SCHEMA_VERSIONS[message_type]
    (_,), components = msgspec.json.schema_components([model], ref_template="#/$defs/{name}")
    root = components.pop(model.__name__)
    root.pop("title", None)
    root.pop("description", None)
    spec = next(t for t in OUTPUT_TOPICS if t.name == ERP_OUTBOUND)
    example = json.loads(encode_message(example_message(message_type)))
    example["schema"] = schema_urn(message_type, version)
    schema: Schema = {
        "$schema": DRAFT,
        "$id": schema_urn(message_type, version),
        "title": f"{message_type} v{version}",
        "description": DESCRIPTIONS[message_type] + " Later versions only add optional "
        "fields (FULL_TRANSITIVE); unknown fields must be ignored.",
        "x-topic": ERP_OUTBOUND,
        "x-partitions": spec.partitions,
        "x-key": "the message's `work_order`, as UTF-8 bytes: one work order, one partition, "
        "in order",
        "x-headers": _HEADERS,
        **_walk(root),
        "$defs": {name: _walk(components[name]) for name in sorted(components)},
        "examples": [example],
    }
    return schema


def build_all() -> dict[str, str]:
    """File name -> text of the current version of every message type."""
    return {file_name(t): render(build_erp_schema(t)) for t in MESSAGE_OF_TYPE}


def published(directory: Path = SOURCE_DIR) -> dict[str, dict[int, Schema]]:
    """Type -> version -> schema, of every schema file in `directory`."""
    out: dict[str, dict[int, Schema]] = {}
    for path in sorted(directory.glob("*.schema.json")):
        m = _FILE.match(path.name)
        if m:
            out.setdefault(m[1], {})[int(m[2])] = json.loads(path.read_text(encoding="utf-8"))
    return out


def write(directory: Path = SOURCE_DIR) -> list[Path]:
    """Write the current version of each type (earlier versions are never rewritten)."""
    return write_files(directory, build_all())


def check(directory: Path = SOURCE_DIR) -> list[str]:
    """Stale or missing current files, unknown files, missing earlier versions, and every
    FULL_TRANSITIVE incompatibility between the published versions (empty: all good)."""
    problems = stale_files(directory, build_all())
    versions = published(directory)
    for path in sorted(directory.glob("*.schema.json")):
        m = _FILE.match(path.name)
        if m is None or m[1] not in MESSAGE_OF_TYPE or int(m[2]) > ERP_SCHEMA_VERSIONS[m[1]]:
            problems.append(f"{path.name}: no message type and version publishes it")
    for message_type, current in ERP_SCHEMA_VERSIONS.items():
        have = versions.get(message_type, {})
        problems += [f"{file_name(message_type, v)}: missing (earlier versions stay published)"
                     for v in range(1, current) if v not in have]
        problems += [f"{message_type} {p}" for p in compat.transitive_problems(have)]
    return problems


def load_erp_schema(message_type: str, version: int | None = None) -> Schema:
    """A published ERP schema, read from the installed package data."""
    if message_type not in MESSAGE_OF_TYPE:
        raise KeyError(f"unknown ERP message type {message_type!r}")
    text = resources.files(PACKAGE).joinpath(file_name(message_type, version)).read_text(
        encoding="utf-8")
    schema: Schema = json.loads(text)
    return schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m linetrace.schemas.erp.schema_files",
        description="Generate or check the published JSON Schemas of the ERP messages.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="(re)write the current versions")
    mode.add_argument("--check", action="store_true", help="exit 1 if stale or incompatible")
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
        print("run `python -m linetrace.schemas.erp.schema_files --write` for stale files; an "
              "incompatible change needs a compatible design (docs/erp.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
