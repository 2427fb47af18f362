"""The hardware bill of materials (HBOM) of a unit: CycloneDX 1.6 JSON, built from its events.

The as-built tree is computed here from the unit's own events (and those of the sub-assemblies
installed in it), not from the SQL projections, and by the same function that the offline
verifier runs over the leaves of an evidence bundle: what the HBOM claims and what the verifier
recomputes cannot drift apart. No database in this module (`linetrace verify` imports it).

Nesting follows the install `parent` links: the server is the BOM's subject
(`metadata.component`), its parts are the top-level components, a GPU sits inside its baseboard
and a PCBA's placed parts inside the PCBA. Serial, lot and location use the registered
`cdx:device:*` property names; MPN, internal P/N, category and quantity use `linetrace:part:*`.
Firmware appears as `type: firmware` with its SHA-256, inside the unit it was flashed on.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.contact import OrganizationalEntity
from cyclonedx.output.json import JsonV1Dot6

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event

from .errors import LedgerError

SERIAL = "cdx:device:serialNumber"
LOT = "cdx:device:lotNumber"
LOCATION = "cdx:device:location"
MPN = "linetrace:part:mpn"
PN = "linetrace:part:pn"
CATEGORY = "linetrace:part:category"
QTY = "linetrace:part:qty"
FW_IMAGE = "linetrace:firmware:image"
FW_TARGET = "linetrace:firmware:target"


class HbomMalformed(LedgerError):
    """An HBOM file is not the CycloneDX JSON linetrace writes."""

    code = "hbom.malformed"


@dataclass(frozen=True)
class Part:
    """One installed part, as built. `owner` is the unit whose event installed it."""

    owner: str
    parent: str
    serial: str | None
    lot: str
    mpn: str
    category: str | None = None
    pn: str | None = None
    qty: int | None = None
    location: str | None = None

    def key(self) -> tuple[str, str | None, str, str, int | None, str | None]:
        """What an HBOM must state about this part (and what the verifier compares)."""
        return (self.parent, self.serial, self.lot, self.mpn, self.qty, self.location)


@dataclass(frozen=True)
class FirmwareImage:
    """The latest image flashed per (unit, component, target). `holder` is the device it sits
    in: the target part when the target names an installed serial, else the unit."""

    owner: str
    holder: str
    component: str
    target: str | None
    image: str
    version: str
    sha256: str

    def key(self) -> tuple[str, str, str]:
        return (self.holder, self.component, self.sha256)


@dataclass(frozen=True)
class AsBuilt:
    unit: str
    product: str | None
    parts: tuple[Part, ...]
    firmware: tuple[FirmwareImage, ...]
    assemblies: tuple[str, ...]  # sub-assembly serials whose own events are included


def _location(item: b.InstalledItem) -> str | None:
    return f"slot {item.slot}" if item.slot is not None else item.ref


def current_items(events: Sequence[Event]) -> list[b.InstalledItem]:
    """Installed items still in place after replaying installs and uninstalls in log order.

    Removal matches like the ledger's projection: by serial, else slot, else ref, else lot.
    """
    return [item for _, item in current_installs(events)]


def current_installs(events: Sequence[Event]) -> list[tuple[Event, b.InstalledItem]]:
    """`current_items`, each with the `materials.installed` event that installed it."""
    current: list[tuple[Event, b.InstalledItem]] = []
    for e in events:
        if isinstance(e.body, b.MaterialsInstalled):
            current.extend((e, i) for i in e.body.items)
        elif isinstance(e.body, b.MaterialsUninstalled):
            for r in e.body.items:
                if r.serial is not None:
                    current = [(x, i) for x, i in current if i.serial != r.serial]
                elif r.slot is not None:
                    current = [(x, i) for x, i in current if i.slot != r.slot]
                elif r.ref is not None:
                    current = [(x, i) for x, i in current if i.ref != r.ref]
                elif r.lot is not None:
                    current = [(x, i) for x, i in current if i.lot != r.lot]
    return current


def as_built(unit: str, chains: Mapping[str, Sequence[Event]]) -> AsBuilt:
    """The unit's installed parts and firmware from `chains` (subject -> its events in log
    order). A part whose serial has a chain of its own is a sub-assembly: its parts follow."""
    items: list[tuple[str, b.InstalledItem]] = []
    firmware: dict[tuple[str, str, str | None], b.FirmwareFlashed] = {}
    assemblies: list[str] = []
    todo, seen = [unit], {unit}
    product: str | None = None
    while todo:
        owner = todo.pop(0)
        events = chains.get(owner, ())
        for e in events:
            if owner == unit and isinstance(e.body, b.WorkStarted):
                product = e.body.product
            if isinstance(e.body, b.FirmwareFlashed):
                firmware[(owner, e.body.component, e.body.target)] = e.body
        for item in current_items(events):
            items.append((owner, item))
            if item.serial is not None and item.serial in chains and item.serial not in seen:
                seen.add(item.serial)
                todo.append(item.serial)
                assemblies.append(item.serial)
    serials = {i.serial for _, i in items if i.serial is not None}
    parts = tuple(
        Part(owner=owner, parent=i.parent if i.parent in serials else owner, serial=i.serial,
             lot=i.lot, mpn=i.mpn, category=i.category, pn=i.pn, qty=i.qty,
             location=_location(i))
        for owner, i in items
    )
    images = tuple(
        FirmwareImage(owner, fw.target if fw.target in serials or fw.target in seen else owner,
                      fw.component, fw.target, fw.image, fw.version, fw.sha256)
        for (owner, _, _), fw in firmware.items())
    return AsBuilt(unit, product, parts, images, tuple(assemblies))


# --- Writing ---------------------------------------------------------------------------------


def _props(pairs: Sequence[tuple[str, object]]) -> list[Property]:
    return [Property(name=k, value=str(v)) for k, v in pairs if v is not None]


def build_hbom(built: AsBuilt, *, serial_number: uuid.UUID, timestamp: datetime,
               suppliers: Mapping[str, str] | None = None) -> bytes:
    """CycloneDX 1.6 JSON bytes. Deterministic for equal inputs: the caller fixes the BOM serial
    number and timestamp (from the sealing event), so a redone seal is byte-identical."""
    suppliers = suppliers or {}
    root = Component(type=ComponentType.DEVICE, name=built.product or "unit",
                     bom_ref=built.unit, properties=_props([(SERIAL, built.unit)]))
    bom = Bom(serial_number=serial_number)
    bom.metadata.timestamp = timestamp
    bom.metadata.component = root
    by_serial: dict[str, Component] = {built.unit: root}
    children: dict[str, list[Component]] = {}
    used_refs: set[str] = {built.unit}
    for n, p in enumerate(built.parts):
        ref = p.serial if p.serial and p.serial not in used_refs else f"{p.owner}/part-{n}"
        used_refs.add(ref)
        supplier = suppliers.get(p.lot)
        comp = Component(
            type=ComponentType.DEVICE, name=p.pn or p.mpn, bom_ref=ref,
            supplier=OrganizationalEntity(name=supplier) if supplier else None,
            properties=_props([(SERIAL, p.serial), (LOT, p.lot), (LOCATION, p.location),
                               (MPN, p.mpn), (PN, p.pn), (CATEGORY, p.category), (QTY, p.qty)]))
        if p.serial is not None:
            by_serial.setdefault(p.serial, comp)
        children.setdefault(p.parent, []).append(comp)
    for fw in built.firmware:
        comp = Component(
            type=ComponentType.FIRMWARE, name=fw.component, version=fw.version,
            bom_ref=f"{fw.owner}/firmware/{fw.component}/{fw.target or ''}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=fw.sha256)],
            properties=_props([(FW_IMAGE, fw.image), (FW_TARGET, fw.target)]))
        children.setdefault(fw.holder, []).append(comp)
    for parent, comps in children.items():
        holder = by_serial[parent]
        if holder is root:
            for c in comps:
                bom.components.add(c)
        else:
            for c in comps:
                holder.components.add(c)
        bom.register_dependency(holder, comps)
    return JsonV1Dot6(bom).output_as_string(indent=2).encode("utf-8")


# --- Reading (the verifier's side) -----------------------------------------------------------


@dataclass(frozen=True)
class HbomContent:
    unit: str
    parts: Counter[tuple[str, str | None, str, str, int | None, str | None]]
    firmware: Counter[tuple[str, str, str]]


def _prop_map(comp: Mapping[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in comp.get("properties", []) if isinstance(p, dict)}


def read_hbom(data: bytes) -> HbomContent:
    """The parts (parent, serial, lot, mpn, qty, location) and firmware an HBOM states."""
    try:
        doc = json.loads(data)
        root = doc["metadata"]["component"]
        unit = _prop_map(root)[SERIAL]
    except (ValueError, KeyError, TypeError):
        raise HbomMalformed("HBOM is not CycloneDX JSON with metadata.component and its "
                            f"{SERIAL} property") from None
    parts: Counter[tuple[str, str | None, str, str, int | None, str | None]] = Counter()
    firmware: Counter[tuple[str, str, str]] = Counter()

    def walk(comps: Any, parent: str) -> None:
        if not isinstance(comps, list):
            raise HbomMalformed("HBOM `components` must be lists")
        for c in comps:
            props = _prop_map(c)
            if c.get("type") == "firmware":
                sha = next((h.get("content") for h in c.get("hashes", [])
                            if h.get("alg") == "SHA-256"), "")
                firmware[(parent, str(c.get("name")), str(sha))] += 1
                continue
            qty = props.get(QTY)
            parts[(parent, props.get(SERIAL), props.get(LOT, ""), props.get(MPN, ""),
                   int(qty) if qty is not None and qty.isdigit() else None,
                   props.get(LOCATION))] += 1
            walk(c.get("components", []), props.get(SERIAL) or parent)

    try:
        walk(doc.get("components", []), unit)
    except (AttributeError, TypeError):
        raise HbomMalformed("HBOM components are not CycloneDX objects") from None
    return HbomContent(unit, parts, firmware)


def expected_content(built: AsBuilt) -> HbomContent:
    return HbomContent(built.unit, Counter(p.key() for p in built.parts),
                       Counter(f.key() for f in built.firmware))
