"""The HBOM sealed for a simulated server: valid CycloneDX 1.6, nested as built, exact parts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import trace
from linetrace.ledger.views import to_data
from linetrace.ledger.proof.hbom import (
    CATEGORY,
    LOCATION,
    LOT,
    MPN,
    SERIAL,
    as_built,
    build_hbom,
    expected_content,
    read_hbom,
)
from linetrace.ledger.models import Firmware
from linetrace.ledger.system_events import sealed_hbom, unsealed_hbom
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, decode_event, encode_event

from .test_log_line import Fed, feed_line, line


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fed, bytes]]:
    ledger = Ledger(f"sqlite:///{tmp_path_factory.mktemp('hbom') / 'ledger.db'}")
    fed = feed_line(ledger, line())
    with ledger.reader() as s:
        data = sealed_hbom(s, fed.server)
    assert data is not None
    yield fed, data
    ledger.close()


def props(comp: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in comp.get("properties", [])}


def devices(comps: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for c in comps:
        if c["type"] == "device":
            yield c
        yield from devices(c.get("components", []))


def test_the_sealed_hbom_passes_the_strict_cyclonedx_16_validator(sealed: tuple[Fed, bytes]
                                                                  ) -> None:
    _, data = sealed
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    doc = json.loads(data)
    assert doc["specVersion"] == "1.6" and doc["bomFormat"] == "CycloneDX"


def test_the_eight_gpus_are_nested_under_the_baseboard_with_slots(sealed: tuple[Fed, bytes]
                                                                 ) -> None:
    fed, data = sealed
    doc = json.loads(data)
    assert props(doc["metadata"]["component"])[SERIAL] == fed.server
    board = next(c for c in doc["components"] if props(c).get(CATEGORY) == "baseboard")
    gpus = [c for c in board["components"] if props(c).get(CATEGORY) == "gpu"]
    unit = fed.plan.servers[0]
    assert sorted(props(g)[SERIAL] for g in gpus) == sorted(s for s, _ in unit.gpus.values())
    assert sorted(props(g)[LOCATION] for g in gpus) == [f"slot {i}" for i in range(8)]
    assert all(props(g)[LOT].startswith("LOT-S7-GPU-") and MPN in props(g) for g in gpus)
    pcba = next(c for c in doc["components"] if props(c).get(CATEGORY) == "mainboard")
    assert props(pcba)[SERIAL] == unit.mainboard.serial  # type: ignore[union-attr]
    assert {props(c).get(CATEGORY) for c in pcba["components"]} >= {"cpu", "dimm", "capacitor"}


def test_firmware_is_listed_with_its_sha256_on_the_device_it_was_flashed_on(
        sealed: tuple[Fed, bytes]) -> None:
    fed, data = sealed
    doc = json.loads(data)
    found: dict[tuple[str, str], str] = {}

    def walk(comps: list[dict[str, Any]], holder: str) -> None:
        for c in comps:
            if c["type"] == "firmware":
                (h,) = c["hashes"]
                assert h["alg"] == "SHA-256"
                found[(holder, c["name"])] = h["content"]
            walk(c.get("components", []), props(c).get(SERIAL) or holder)

    walk(doc["components"], fed.server)
    with fed.ledger.reader() as s:
        flashed = {(f.target or f.serial, f.component): f.sha256
                   for f in s.scalars(select(Firmware).order_by(Firmware.id))}
    assert found == flashed and len(found) > 8


def test_the_hbom_holds_exactly_the_as_built_parts_of_trace(sealed: tuple[Fed, bytes]) -> None:
    fed, data = sealed
    with fed.ledger.reader() as s:
        parts = to_data(trace(s, fed.server))["parts"]
    in_trace = sorted((p["serial"] or "", p["lot"], p["mpn"]) for p in parts)
    in_hbom = sorted((props(c).get(SERIAL, ""), props(c)[LOT], props(c)[MPN])
                     for c in devices(json.loads(data)["components"]))
    assert in_hbom == in_trace


def test_hbom_of_an_unsealed_unit_is_generated_fresh_and_never_stored(
        sealed: tuple[Fed, bytes]) -> None:
    fed, _ = sealed
    pcba = fed.plan.servers[0].mainboard.serial  # type: ignore[union-attr]
    with fed.ledger.reader() as s:
        assert sealed_hbom(s, pcba) is None
        fresh = unsealed_hbom(s, pcba)
    assert read_hbom(fresh).unit == pcba


def _event(etype: str, body: b.Body, n: int) -> Event:
    return decode_event(encode_event(event_type=etype, source="st-1", subject="SRV-1", body=body,
                                     time=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC),
                                     event_id=str(uuid.UUID(int=n)), stationseq=n))


def gpu(slot: int, serial: str) -> b.InstalledItem:
    return b.InstalledItem(lot="L-GPU", mpn="GPU-MPN", serial=serial, slot=slot, parent="BB-1",
                           category="gpu")


def test_a_replaced_gpu_is_replaced_in_the_as_built_tree_and_the_hbom() -> None:
    events = [
        _event("materials.installed", b.MaterialsInstalled(items=[
            b.InstalledItem(lot="L-BB", mpn="BB-MPN", serial="BB-1", category="baseboard"),
            gpu(0, "G-0"), gpu(1, "G-1")]), 1),
        _event("materials.uninstalled", b.MaterialsUninstalled(
            items=[b.RemovedItem(serial="G-1")], reason="DefectiveMaterial"), 2),
        _event("materials.installed", b.MaterialsInstalled(items=[gpu(1, "G-9")]), 3),
        _event("firmware.flashed", b.FirmwareFlashed(component="VBIOS", image="v", version="1",
                                                     sha256="a" * 64, target="G-9"), 4),
        _event("firmware.flashed", b.FirmwareFlashed(component="VBIOS", image="v", version="2",
                                                     sha256="b" * 64, target="G-9"), 5),
    ]
    built = as_built("SRV-1", {"SRV-1": events})
    assert [p.serial for p in built.parts] == ["BB-1", "G-0", "G-9"]
    assert [(f.holder, f.sha256) for f in built.firmware] == [("G-9", "b" * 64)]
    data = build_hbom(built, serial_number=uuid.UUID(int=1), timestamp=datetime(2026, 1, 1,
                                                                                 tzinfo=UTC))
    assert read_hbom(data) == expected_content(built)
    assert build_hbom(built, serial_number=uuid.UUID(int=1),
                      timestamp=datetime(2026, 1, 1, tzinfo=UTC)) == data  # deterministic
    # The bytes themselves, not only what read_hbom extracts: a strict CycloneDX 1.6 document
    # in which the removed GPU and the superseded firmware appear nowhere.
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    assert b'"G-1"' not in data and b"a" * 64 not in data
    assert b'"G-9"' in data and data.count(b"b" * 64) == 1
