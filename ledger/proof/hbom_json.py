"""The sealed HBOM's bytes without the CycloneDX object model: the same bytes, ~30x faster.

`hbom.build_hbom` builds the BOM with cyclonedx-python-lib and serialises it: ~40-55 ms per
packed server, almost all of it the library's sorted sets of components (compared by 30-field
tuples), its validation, dependency-graph merging and reflection-driven serialiser. A seal is
made for every `unit.packed`, inside the worker's write path, so that cost was most of the
writer's time. This module writes the dict that library would produce for linetrace's HBOMs
and dumps it the way the library does (`json.dumps(..., indent=2)`), so a seal made here is
byte-identical to one made there: a redo, a replay or a worker on another version seals the
same bytes (CONTRACTS.md). `tests/unit/test_hbom_json.py` holds the two to the same bytes.

What the library does that matters for our BOMs, and is reproduced here:
- object keys in alphabetical order; the document's `$schema`, `bomFormat` and `specVersion`
  last; empty lists (components, properties, dependencies) left out;
- components, nested components and properties kept sorted: components by (type, group,
  name, version, bom-ref) with a missing value last, properties by (name, value);
- a dependency entry for every component that holds or is held (`register_dependency`),
  sorted by ref, each `dependsOn` sorted;
- the timestamp as `datetime.isoformat()` (naive: local time zone, as the library does).

Inputs outside what linetrace seals (a supplier, an empty name or value, two components with
one bom-ref) go to the library itself.
"""

from __future__ import annotations

import uuid
from json.encoder import encode_basestring_ascii
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from .hbom import (
    CATEGORY,
    FW_IMAGE,
    FW_TARGET,
    LOCATION,
    LOT,
    MPN,
    PN,
    QTY,
    SERIAL,
    AsBuilt,
    build_hbom,
)

SCHEMA = "http://cyclonedx.org/schema/bom-1.6.schema.json"

_Comp = dict[str, Any]


class _Unsupported(Exception):
    """An input the fast path does not reproduce: the library serialises it."""


def _props(pairs: Iterable[tuple[str, object]]) -> list[dict[str, str]]:
    props = {(k, str(v)) for k, v in pairs if v is not None}
    for k, v in props:
        if not k or not v:
            raise _Unsupported
    return [{"name": k, "value": v} for k, v in sorted(props)]


def _component(kind: str, name: str, ref: str, props: list[dict[str, str]],
               version: str | None = None, sha256: str | None = None) -> _Comp:
    if not name or not ref or version == "" or sha256 == "":
        raise _Unsupported
    comp: _Comp = {"bom-ref": ref}
    if sha256 is not None:
        comp["hashes"] = [{"alg": "SHA-256", "content": sha256}]
    comp["name"] = name
    if props:
        comp["properties"] = props
    comp["type"] = kind
    if version is not None:
        comp["version"] = version
    return comp


def _order(comp: _Comp) -> tuple[str, str, tuple[bool, str], str]:
    """The library's component order (its comparable tuple; group and purl are never set)."""
    version = comp.get("version")
    return (comp["type"], comp["name"], (version is None, version or ""), comp["bom-ref"])


def _sorted(comps: list[_Comp]) -> list[_Comp]:
    return sorted(comps, key=_order)


def _document(built: AsBuilt, serial_number: uuid.UUID, timestamp: datetime) -> dict[str, Any]:
    root = _component("device", built.product or "unit", built.unit,
                      _props([(SERIAL, built.unit)]))
    by_serial: dict[str, _Comp] = {built.unit: root}
    children: dict[str, list[_Comp]] = {}
    refs: set[str] = {built.unit}
    for n, p in enumerate(built.parts):
        ref = p.serial if p.serial and p.serial not in refs else f"{p.owner}/part-{n}"
        if ref in refs:
            raise _Unsupported
        refs.add(ref)
        comp = _component("device", p.pn or p.mpn, ref, _props([
            (SERIAL, p.serial), (LOT, p.lot), (LOCATION, p.location), (MPN, p.mpn),
            (PN, p.pn), (CATEGORY, p.category), (QTY, p.qty)]))
        if p.serial is not None:
            by_serial.setdefault(p.serial, comp)
        children.setdefault(p.parent, []).append(comp)
    for fw in built.firmware:
        ref = f"{fw.owner}/firmware/{fw.component}/{fw.target or ''}"
        if ref in refs:
            raise _Unsupported
        refs.add(ref)
        comp = _component("firmware", fw.component, ref,
                          _props([(FW_IMAGE, fw.image), (FW_TARGET, fw.target)]),
                          version=fw.version, sha256=fw.sha256)
        children.setdefault(fw.holder, []).append(comp)
    top: list[_Comp] = []
    depends: dict[str, set[str]] = {built.unit: set()}  # the BOM's subject always has one
    for parent, comps in children.items():
        holder = by_serial[parent]
        if holder is root:
            top += comps
        else:
            holder.setdefault("_children", []).extend(comps)
        depends.setdefault(holder["bom-ref"], set()).update(c["bom-ref"] for c in comps)
        for c in comps:
            depends.setdefault(c["bom-ref"], set())
    doc: dict[str, Any] = {}
    if top:
        doc["components"] = [_finish(c) for c in _sorted(top)]
    if depends:
        doc["dependencies"] = [{"dependsOn": sorted(deps), "ref": ref} if deps else {"ref": ref}
                               for ref, deps in sorted(depends.items())]
    stamp = timestamp if timestamp.tzinfo is not None else timestamp.astimezone()
    doc["metadata"] = {"component": _finish(root), "timestamp": stamp.isoformat()}
    doc["serialNumber"] = serial_number.urn
    doc["version"] = 1
    doc["$schema"] = SCHEMA
    doc["bomFormat"] = "CycloneDX"
    doc["specVersion"] = "1.6"
    return doc


def _finish(comp: _Comp) -> _Comp:
    """The component as serialised: its nested components sorted, in key order."""
    nested = comp.pop("_children", None)
    if not nested:
        return comp
    out: _Comp = {"bom-ref": comp.pop("bom-ref"),
                  "components": [_finish(c) for c in _sorted(nested)]}
    out.update(comp)
    return out


def hbom_bytes(built: AsBuilt, *, serial_number: uuid.UUID, timestamp: datetime,
               suppliers: Mapping[str, str] | None = None) -> bytes:
    """`hbom.build_hbom`'s bytes for the same arguments (module docstring)."""
    if suppliers:
        return build_hbom(built, serial_number=serial_number, timestamp=timestamp,
                          suppliers=suppliers)
    try:
        doc = _document(built, serial_number, timestamp)
    except _Unsupported:
        return build_hbom(built, serial_number=serial_number, timestamp=timestamp)
    out: list[str] = []
    _dump(doc, "\n", out)
    return "".join(out).encode("utf-8")


def _dump(value: Any, newline: str, out: list[str]) -> None:
    """`json.dumps(value, indent=2)` for dicts, lists, strings and ints, several times faster
    (the indenting encoder is pure Python: 5 ms of a server's HBOM). Strings and ints are
    written in the loop that meets them; only containers recurse."""
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        sep = "{" + inner
        for k, v in value.items():
            head = sep + _enc(k) + ": "
            sep = "," + inner
            if type(v) is str:
                out.append(head + _enc(v))
            else:
                out.append(head)
                _dump(v, inner, out)
        out.append(newline + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        sep = "[" + inner
        for v in value:
            if type(v) is str:
                out.append(sep + _enc(v))
            elif type(v) is dict and v and all(type(x) is str for x in v.values()):
                # a property, a hash, a dependency without dependsOn: one piece of text
                deeper = inner + "  "
                out.append(sep + "{" + deeper + ("," + deeper).join(
                    _enc(k) + ": " + _enc(x) for k, x in v.items()) + inner + "}")
            else:
                out.append(sep)
                _dump(v, inner, out)
            sep = "," + inner
        out.append(newline + "]")
    elif isinstance(value, str):
        out.append(_enc(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        out.append(int.__repr__(value))
    else:
        raise TypeError(f"not in an HBOM: {type(value).__name__}")


_enc = encode_basestring_ascii
