"""Pure parts of holds: hold ids, which holds stop a unit, where a disposition sends it."""

from __future__ import annotations

import pytest

from linetrace.ledger.dispositions import route_for_disposition
from linetrace.ledger.hold_actions import HoldError
from linetrace.ledger.holds import HoldInfo, HoldsInForce, _Active, hold_id_for, is_disposition_code
from linetrace.schemas.routes import packaged_routes

A = packaged_routes().route("A")


def test_a_hold_id_is_a_function_of_its_cause_and_code() -> None:
    one = hold_id_for("6f0c1a8e-9a57-4d0e-b3b4-2b1f0c6b1e01", "hold.manual")
    assert one == hold_id_for("6f0c1a8e-9a57-4d0e-b3b4-2b1f0c6b1e01", "hold.manual")
    assert one != hold_id_for("6f0c1a8e-9a57-4d0e-b3b4-2b1f0c6b1e01", "route.missing_step")
    assert one.startswith("HOLD-") and len(one) == 21


def _in_force(*holds: tuple[str, str, str, int, list[str]]) -> HoldsInForce:
    out = HoldsInForce()
    for hold_id, scope, target, seq, units in holds:
        h = _Active(HoldInfo(hold_id, scope, target, "r", "quality", "hold.manual"), seq)
        out.holds.append(h)
        out.by_target.setdefault((scope, target), []).append(h)
        for u in units:
            out.by_unit.setdefault(u, []).append(h)
    return out


def test_a_unit_is_stopped_by_holds_on_it_its_order_its_lots_and_mpns_and_its_station() -> None:
    held = _in_force(("H-LOT", "lot", "L1", 5, ["S1"]), ("H-WO", "work_order", "WO1", 3, []),
                     ("H-MPN", "mpn", "M1", 7, []), ("H-ST", "station", "st-1", 9, []),
                     ("H-OTHER", "lot", "L2", 1, ["S2"]))
    got = held.for_unit("S1", work_order="WO1", lots=["L1"], mpns=["M1"], station="st-1")
    assert [h.hold_id for h in got] == ["H-WO", "H-LOT", "H-MPN", "H-ST"]
    named_only = held.for_unit("S1", work_order=None, lots=(), mpns=(), station=None)
    assert [h.hold_id for h in named_only] == ["H-LOT"]
    assert [h.hold_id for h in held.for_unit("S1", work_order="WO1", lots=["L1"], mpns=["M1"],
                                             station="st-1", before_seq=6)] == ["H-WO", "H-LOT"]
    assert held.station_locked("st-1") is not None and held.station_locked("st-2") is None
    assert not HoldsInForce().any() and held.any()


@pytest.mark.parametrize("decision,held_at,expected", [
    ("scrap", 90, (900, "repair")), ("repair", 90, (900, "repair")),
    ("use-as-is", 90, (100, "final-qa")), ("scrap", 900, (900, "repair")),
    ("use-as-is", 900, (100, "final-qa"))])
def test_a_disposition_routes_to_the_repair_step_or_the_step_after_the_failed_one(
        decision: str, held_at: int, expected: tuple[int, str]) -> None:
    assert route_for_disposition(A, 90, held_at, decision) == expected


def test_use_as_is_after_the_last_step_is_refused() -> None:
    with pytest.raises(HoldError, match="last"):
        route_for_disposition(A, 120, 120, "use-as-is")


def test_disposition_codes() -> None:
    assert is_disposition_code("route.max_loops") and is_disposition_code("disposition.mrb")
    assert not is_disposition_code("route.missing_step") and not is_disposition_code("hold.manual")
