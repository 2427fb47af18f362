"""The fast HBOM writer seals exactly the bytes cyclonedx-python-lib would (a redo, a replay or
a worker on the previous version must seal byte-identical HBOMs, CONTRACTS.md)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from linetrace.ledger.proof.hbom import AsBuilt, FirmwareImage, Part, as_built, build_hbom
from linetrace.ledger.proof.hbom_json import hbom_bytes
from linetrace.schemas.envelope import Event

from .test_log_line import line, station_candidates

T = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def both(built: AsBuilt, serial: uuid.UUID, t: datetime) -> tuple[bytes, bytes]:
    return (hbom_bytes(built, serial_number=serial, timestamp=t),
            build_hbom(built, serial_number=serial, timestamp=t))


@pytest.mark.parametrize("seed", [7, 11])
def test_every_simulated_server_and_board_gets_the_librarys_bytes(seed: int) -> None:
    plan = line(3, seed)
    chains: dict[str, list[Event]] = {}
    for c in station_candidates(plan):
        chains.setdefault(c.event.subject, []).append(c.event)
    built = [as_built(unit, chains) for unit in sorted(chains)]
    assert any(b.assemblies for b in built) and any(b.firmware for b in built)
    for n, b in enumerate(built):
        fast, lib = both(b, uuid.uuid5(uuid.NAMESPACE_URL, b.unit), T + timedelta(microseconds=n))
        assert fast == lib, b.unit


def _random_built(rng: random.Random, n: int) -> AsBuilt:
    unit = f"SRV-{n}"
    names = ["GPU", "gpü-Ω", "NIC", "a", "Z", "cpu", "DIMM 64G", 'q"uote\\', "CX7"]
    subs = [f"SUB-{n}-{k}" for k in range(rng.randrange(0, 3))]
    holders = [unit, *subs]
    parts = [Part(owner=unit, parent=unit, serial=s, lot=f"LOT-{s}", mpn=f"MPN-{s}",
                  category="pcba") for s in subs]
    for k in range(rng.randrange(0, 40)):
        serial = rng.choice([None, f"P-{rng.randrange(30)}", subs[0] if subs else None])
        parts.append(Part(
            owner=rng.choice(holders), parent=rng.choice(holders), serial=serial,
            lot=rng.choice(["L1", "L2", "lot-ünï"]), mpn=rng.choice(names),
            category=rng.choice([None, "gpu", "reel"]), pn=rng.choice([None, *names]),
            qty=rng.choice([None, 1, 32, 4000]),
            location=rng.choice([None, f"slot {k}", "C1-C480", "R1,R2"])))
    firmware: dict[tuple[str, str, str | None], FirmwareImage] = {}  # one per as_built's key
    for k in range(rng.randrange(0, 5)):
        fw = FirmwareImage(owner=rng.choice(holders), holder=rng.choice(holders),
                           component=rng.choice(["BIOS", "BMC", "VBIOS", "Ω"]),
                           target=rng.choice([None, "spi0", f"t{k}"]), image=f"img-{k}",
                           version=rng.choice(["1.0", "2.10", "1.0-rc"]),
                           sha256=f"{rng.getrandbits(256):064x}")
        firmware[(fw.owner, fw.component, fw.target)] = fw
    return AsBuilt(unit, rng.choice([None, "HGX-B300-8GPU"]), tuple(parts),
                   tuple(firmware.values()), tuple(subs))


def test_random_as_built_trees_get_the_librarys_bytes() -> None:
    rng = random.Random(1782)
    for n in range(300):
        built = _random_built(rng, n)
        t = T + timedelta(seconds=n, microseconds=rng.choice([0, 1, 999_999]))
        fast, lib = both(built, uuid.UUID(int=rng.getrandbits(128)), t)
        assert fast == lib, n


def test_a_unit_with_nothing_installed_gets_the_librarys_bytes() -> None:
    built = AsBuilt("SRV-1", None, (), (), ())
    fast, lib = both(built, uuid.UUID(int=1), T)
    assert fast == lib
