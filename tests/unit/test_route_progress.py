"""A unit's progress along its route and the checks made from it (schemas/routes/progress.py):
each reason code, the rework loop and its dispositions, releases, sub-assemblies."""

from __future__ import annotations

import msgspec
import pytest

from linetrace.schemas import bodies as b
from linetrace.schemas.routes import Route, packaged_routes
from linetrace.schemas.routes import progress as pg
from linetrace.schemas.routes.progress import Ended, Progress, Rules, first_steps_of, replay

BOOK = packaged_routes()
A = BOOK.route("A")
PCBA = BOOK.route("A-PCBA")
TYPES = {s.step: s.station_type for r in (A, PCBA) for s in (*r.steps, *r.repair_steps)}
TX = "00000000-0000-4000-8000-000000000001"


def rules(route_for=BOOK.find_route_for_unit) -> Rules:  # type: ignore[no-untyped-def]
    return Rules(route_for=route_for, first_steps=first_steps_of(BOOK.routes.values()))


class Unit:
    """A unit's events, fed to a Progress as the stage does: judge, then fold."""

    def __init__(self, serial: str = "SRV-1", product: str = "A", kind: str = "server",
                 r: Rules | None = None) -> None:
        self.p = Progress(serial, r or rules())
        self.product, self.kind = product, kind
        self.entries: list[pg.Reason] = []

    def apply(self, event_type: str, body: b.Body) -> None:
        self.p.apply(event_type, body)

    def enter(self, step: int, station_type: str | None = None) -> list[pg.Reason]:
        """unit.arrived then work.started at `step`; the reasons each entry got."""
        st = station_type or TYPES[step]
        out = self.p.entry_reasons(step, st)
        self.apply("unit.arrived", b.UnitArrived(step=step))
        started = b.WorkStarted(transaction_id=TX, step=step, operation="op", work_order="WO-1",
                                product=self.product, kind=self.kind)  # type: ignore[arg-type]
        self.p.learn(started)
        out += self.p.entry_reasons(step, st)
        self.apply("work.started", started)
        return out

    def visit(self, step: int, result: str = "Completed", test: str | None = "Passed"
              ) -> list[pg.Reason]:
        reasons = self.enter(step)
        if test is not None:
            self.apply("unit.tested", b.UnitTested(method="FCT", result=test))  # type: ignore[arg-type]
        self.apply("work.completed", b.WorkCompleted(transaction_id=TX, step=step,
                                                     result=result))  # type: ignore[arg-type]
        return reasons

    def through(self, *steps: int) -> None:
        for s in steps:
            assert self.visit(s) == [], s

    def repaired(self, result: str = "RepairSuccessful", return_step: int | None = None) -> None:
        self.enter(900)
        self.apply("unit.repaired", b.UnitRepaired(result=result,  # type: ignore[arg-type]
                                                   return_step=return_step))
        self.apply("work.completed", b.WorkCompleted(transaction_id=TX, step=900,
                                                     result="Completed"))


def codes(reasons: list[pg.Reason]) -> list[str]:
    return [r.code for r in reasons]


def test_a_unit_that_follows_its_route_meets_no_reason() -> None:
    u = Unit()
    u.through(50, 60, 70, 80, 90, 100, 110, 120)
    assert u.p.completed_route() and u.p.route is A
    pcba = Unit("PCBA-1", "A-PCBA", "assembly")
    pcba.through(20, 30, 40)
    assert pcba.p.completed_route() and pcba.p.route is PCBA
    # An assembly may name the product it is built for: it follows the consumed route.
    built_for = Unit("PCBA-2", "A", "assembly")
    built_for.through(20, 30, 40)
    assert built_for.p.route is PCBA


def test_skipped_step_names_the_step_and_why() -> None:
    u = Unit()
    u.through(50, 60, 70)
    reasons = u.enter(90)  # no firmware flash (step 80): arrival and start both refused
    assert codes(reasons) == [pg.SKIPPED_STEP, pg.SKIPPED_STEP]
    assert reasons[0].message == ("step 80 (firmware-flash) is required before step 90 and "
                                  "was not completed")


def test_quality_gate_needs_a_passing_test_or_inspection_at_the_step() -> None:
    u = Unit()
    u.through(50, 60, 70, 80)
    assert u.visit(90, test=None) == []  # burn-in Completed, but no passing test recorded
    reasons = u.p.entry_reasons(100, "final-qa")
    assert codes(reasons) == [pg.GATE_FAILED]
    assert "no passing test or inspection" in reasons[0].message
    failed = Unit("SRV-2")
    failed.through(50, 60, 70, 80)
    failed.visit(90, test="Failed")  # Completed with a failed test: the gate fails
    reasons = failed.p.entry_reasons(100, "final-qa")
    assert codes(reasons) == [pg.GATE_FAILED] and "failed" in reasons[0].message
    # A new attempt at the gate starts its evidence afresh.
    failed.visit(90, test="Passed")
    assert failed.p.entry_reasons(100, "final-qa") == []


def test_a_result_the_step_does_not_list_is_refused() -> None:
    u = Unit()
    u.enter(50)
    reasons = u.p.completion_reasons(b.WorkCompleted(transaction_id=TX, step=50, result="Failed"))
    assert codes(reasons) == [pg.RESULT_NOT_ALLOWED]
    assert "may report Completed, Aborted, not Failed" in reasons[0].message
    u.apply("work.completed", b.WorkCompleted(transaction_id=TX, step=50, result="Failed"))
    assert 50 not in u.p.passed  # a refused result changes nothing
    assert u.p.completion_reasons(b.WorkCompleted(transaction_id=TX, step=50,
                                                  result="Aborted")) == []


def test_unknown_unit_only_when_its_first_event_is_not_at_its_routes_first_step() -> None:
    u = Unit("SRV-X")
    reasons = u.p.entry_reasons(90, "burnin")  # no event yet, and no route starts at 90
    assert codes(reasons) == [pg.UNKNOWN_UNIT] and "routes start at step 20, 50" in reasons[0].message
    assert codes(u.enter(90)) == [pg.UNKNOWN_UNIT, pg.UNKNOWN_UNIT, *[pg.SKIPPED_STEP] * 4]
    # Step 50 starts route A: a new unit may enter there...
    assert Unit("SRV-Y").p.entry_reasons(50, "kitting") == []
    # ...but a PCBA (route A-PCBA starts at 20) whose first event is at 50 is unknown once its
    # work.started names its route.
    board = Unit("PCBA-X", "A-PCBA", "assembly")
    reasons = board.enter(50, "kitting")
    assert pg.UNKNOWN_UNIT in codes(reasons)
    assert "route A-PCBA starts at step 20 (smt-placement)" in \
        next(r.message for r in reasons if r.code == pg.UNKNOWN_UNIT)


def test_a_step_not_on_the_route_and_the_wrong_station_type() -> None:
    u = Unit()
    u.through(50)
    assert codes(u.p.entry_reasons(40, "ict")) == [pg.UNKNOWN_STEP]
    reasons = u.p.entry_reasons(60, "burnin")
    assert codes(reasons) == [pg.WRONG_STATION]
    assert reasons[0].message == ("step 60 (baseboard-gpu-install) is done at a gpu-install "
                                  "station, not a burnin station")
    # A unit's first entry is checked against the station types that start a route there.
    assert codes(Unit("SRV-Z").p.entry_reasons(50, "burnin")) == [pg.WRONG_STATION]


def test_a_failure_follows_the_rework_loop_then_holds_for_disposition() -> None:
    u = Unit()
    u.through(50, 60, 70, 80)
    for loop in (1, 2):  # burn-in: max_loops 2, repair at 900, back to 80
        u.visit(90, "Failed", test="Failed")
        assert u.p.failing == 90
        assert u.p.loops[90] == loop
        u.repaired(return_step=80)
        assert 80 not in u.p.passed  # the route returns it to the flash: done again
        assert codes(u.p.entry_reasons(90, "burnin")) == [pg.SKIPPED_STEP]
        u.visit(80)
    before = u.p.failure_outcome(90)
    assert before is not None and before.hold is not None and before.hold.code == pg.MAX_LOOPS
    assert "after 2 repair loop(s) (max_loops 2)" in before.hold.message
    u.visit(90, "Failed", test="Failed")
    assert u.p.awaiting_disposition
    assert u.p.failure_outcome(90) is None  # held already: no second hold


def test_the_first_failure_is_routed_to_repair() -> None:
    u = Unit()
    u.through(50, 60, 70, 80)
    u.enter(90)
    outcome = u.p.failure_outcome(90)
    assert outcome is not None and outcome.hold is None and outcome.repair is not None
    assert (outcome.repair.step, outcome.repair.station_type, outcome.return_to, outcome.loop,
            outcome.max_loops) == (900, "repair", 80, 1, 2)


def _held_after_max_loops() -> Unit:
    u = Unit()
    u.through(50, 60, 70, 80)
    for _ in range(2):
        u.visit(90, "Failed", test="Failed")
        u.repaired(return_step=80)
        u.visit(80)
    u.visit(90, "Failed", test="Failed")
    assert u.p.awaiting_disposition
    return u


def test_dispositions_repair_grants_a_loop_use_as_is_passes_scrap_scraps() -> None:
    u = _held_after_max_loops()
    u.p.end_hold(Ended(10_000, pg.MAX_LOOPS, 90, "repair"))
    assert not u.p.awaiting_disposition and u.p.grants[90] == 1 and u.p.loops[90] == 3
    u.repaired(return_step=80)
    u.visit(80)
    held = u.p.failure_outcome(90)  # the granted loop was used: the next failure holds again
    assert held is not None and held.hold is not None and held.hold.code == pg.MAX_LOOPS
    assert "+1 granted by disposition" in held.hold.message

    v = _held_after_max_loops()
    v.p.end_hold(Ended(10_000, pg.MAX_LOOPS, 90, "use-as-is"))
    assert 90 in v.p.passed and v.p.entry_reasons(100, "final-qa") == []

    w = _held_after_max_loops()
    w.p.end_hold(Ended(10_000, pg.MAX_LOOPS, 90, "scrap"))
    assert w.p.scrapped


def test_a_failure_without_rework_and_a_repair_that_cannot_repair_hold_for_disposition() -> None:
    plain = msgspec.structs.replace(A, steps=tuple(
        msgspec.structs.replace(s, rework=None) if s.step == 100 else s for s in A.steps))
    u = Unit(r=rules(lambda product, kind: plain))
    u.through(50, 60, 70, 80, 90)
    outcome = u.p.failure_outcome(100)
    assert outcome is not None and outcome.hold is not None
    assert outcome.hold.code == pg.FAILED_NO_REWORK

    v = Unit()
    v.through(50, 60, 70, 80)
    v.visit(90, "Failed", test="Failed")
    v.enter(900)
    unable = v.p.repair_outcome(b.UnitRepaired(result="UnableToRepair"))
    assert unable is not None and unable.hold is not None
    assert (unable.hold.code, unable.step) == (pg.UNABLE_TO_REPAIR, 900)
    assert "failed step 90 (burn-in)" in unable.hold.message
    v.apply("unit.repaired", b.UnitRepaired(result="UnableToRepair"))
    assert v.p.repair_outcome(b.UnitRepaired(result="UnableToRepair")) is None  # held once
    # The repair step failing outright: no rework on a repair step.
    w = Unit()
    w.through(50, 60, 70, 80)
    w.visit(90, "Failed", test="Failed")
    w.enter(900)
    failed_repair = w.p.failure_outcome(900)
    assert failed_repair is not None and failed_repair.hold is not None
    assert failed_repair.hold.code == pg.FAILED_NO_REWORK


def test_a_release_waives_what_stopped_the_unit_at_that_step() -> None:
    u = Unit()
    u.through(50, 60, 70)
    assert codes(u.p.entry_reasons(90, "burnin")) == [pg.SKIPPED_STEP]
    u.p.end_hold(Ended(500, pg.SKIPPED_STEP, 90))
    assert u.p.entry_reasons(90, "burnin") == []
    u.visit(90)
    assert u.p.entry_reasons(100, "final-qa") == []  # 80 was waived, not skipped again
    # A wrong station released at a step is accepted there only.
    v = Unit()
    v.through(50)
    v.p.end_hold(Ended(500, pg.WRONG_STATION, 60))
    assert v.p.entry_reasons(60, "burnin") == []
    v.through(60)
    assert codes(v.p.entry_reasons(70, "burnin")) == [pg.WRONG_STATION]


def test_replay_folds_hold_ends_at_their_position_in_the_log() -> None:
    started = b.WorkStarted(transaction_id=TX, step=50, operation="kitting", work_order="WO-1",
                            product="A", kind="server")
    events = [(1, "unit.arrived", b.UnitArrived(step=50), "kitting-01"),
              (2, "work.started", started, "kitting-01"),
              (3, "work.completed", b.WorkCompleted(transaction_id=TX, step=50,
                                                    result="Completed"), "kitting-01")]
    before = replay("SRV-1", rules(), events, [Ended(2, pg.WRONG_STATION, 60)])
    after = replay("SRV-1", rules(), events, [Ended(99, pg.WRONG_STATION, 60)])
    assert 60 in before.waived_stations and 60 in after.waived_stations  # after the last too
    assert before.route is A and before.passed == {50} and before.station == "kitting-01"
    ignored = replay("SRV-1", rules(), events, [Ended(2, "hold.manual", 60)])
    assert not ignored.waived_stations


def test_a_route_the_unit_did_not_start_on_is_not_used_to_judge_it() -> None:
    u = Unit(r=rules(lambda product, kind: None))  # its route changed since it started
    assert u.enter(50) == [] and u.enter(90) == [] and u.p.route is None


def test_sub_assembly_must_have_completed_its_route() -> None:
    sub = A.step(70).consumes[0]
    board = Unit("PCBA-1", "A-PCBA", "assembly")
    board.through(20, 30)
    reasons = pg.assembly_reasons(board.p, sub, "SRV-1", 70)
    assert codes(reasons) == [pg.ASSEMBLY_INCOMPLETE]
    assert reasons[0].message == ("sub-assembly PCBA-1 (route A-PCBA) has not passed step 40 "
                                  "(in-circuit-test) before its install in SRV-1 at step 70")
    board.visit(40, "Completed", test="Failed")  # completed without a passing ICT
    assert codes(pg.assembly_reasons(board.p, sub, "SRV-1", 70)) == [pg.ASSEMBLY_INCOMPLETE]
    board.visit(40)
    assert pg.assembly_reasons(board.p, sub, "SRV-1", 70) == []
    never = Progress("PCBA-9", rules())
    assert "has no events in the ledger" in pg.assembly_reasons(never, sub, "SRV-1", 70)[0].message
    server = Unit("SRV-2")
    server.through(50)
    assert "not a unit of route A-PCBA" in pg.assembly_reasons(server.p, sub, "SRV-1", 70)[0].message


def test_consumed_items_are_found_by_the_current_steps_category() -> None:
    u = Unit()
    u.through(50, 60)
    u.enter(70)
    items = [b.InstalledItem(lot="L1", mpn="M1", category="mainboard", serial="PCBA-1"),
             b.InstalledItem(lot="L2", mpn="M2", category="cpu", serial="CPU-1")]
    found = u.p.consumed(b.MaterialsInstalled(items=items))
    assert [(i.serial, s.route) for i, s in found] == [("PCBA-1", "A-PCBA")]
    u.apply("materials.installed", b.MaterialsInstalled(items=items))
    assert u.p.held_lots == ["L1", "L2"] and u.p.held_mpns == ["M1", "M2"]
    u.apply("materials.uninstalled", b.MaterialsUninstalled(
        items=[b.RemovedItem(serial="CPU-1", lot="L2", mpn="M2")], reason="Other"))
    assert u.p.held_lots == ["L1"]


@pytest.mark.parametrize("scope,code,text", [
    ("unit", pg.HELD, "SRV-1 is on hold HOLD-1: bad"),
    ("work_order", pg.HELD, "work order WO-1 of SRV-1 is on hold HOLD-1: bad"),
    ("lot", pg.MATERIAL_HELD, "lot WO-1 (in or for SRV-1) is on hold HOLD-1: bad"),
    ("station", pg.STATION_LOCKED, "station WO-1 is locked by hold HOLD-1: bad"),
])
def test_hold_reasons(scope: str, code: str, text: str) -> None:
    target = "SRV-1" if scope == "unit" else "WO-1"
    r = pg.hold_reason("SRV-1", "HOLD-1", scope, target, "bad\nmore")
    assert (r.code, r.message) == (code, text)
    assert r.to_json() == {"code": code, "message": text}


def test_every_code_is_described() -> None:
    names = [v for k, v in vars(pg).items() if k.isupper() and isinstance(v, str)
             and v.startswith("route.")]
    assert sorted(names) == sorted(pg.CODES)
    assert isinstance(A, Route)


def test_the_fold_reads_stored_bytes_as_it_reads_bodies() -> None:
    """`read_fact` (what the worker folds from the ledger) gives the progress the full bodies
    give, over a simulated line with failures, repairs and a skipped step."""
    import uuid

    from linetrace.schemas.envelope import encode_event
    from linetrace.stations.simulator.faults import parse_faults
    from linetrace.stations.simulator.line import LineConfig, generate_line

    plan = generate_line(LineConfig(units=12, seed=3, product="mix",
                                    faults=parse_faults("skip-step")))
    compared = 0
    for unit in plan.units:
        full, facts = Progress(unit.serial, rules()), Progress(unit.serial, rules())
        for e in unit.events:
            if e.event_type not in pg.PROGRESS_TYPES:
                continue
            value = encode_event(event_type=e.event_type, source=e.station_id, subject=e.subject,
                                 body=e.body, time=e.time, stationseq=1, event_id=str(uuid.uuid4()))
            etype, fact = pg.read_fact(value)
            assert etype == e.event_type
            full.apply(e.event_type, e.body, e.station_id)
            facts.apply(etype, fact, e.station_id)
            compared += 1
        assert {k: v for k, v in vars(full).items() if k != "rules"} == \
            {k: v for k, v in vars(facts).items() if k != "rules"}
    assert compared > 400
    with pytest.raises(Exception) as e:
        pg.read_fact(b'{"type": "unit.arrived", "data": {}}')
    assert getattr(e.value, "code", None) == "event.invalid"


def test_a_silent_partitions_clock_advances_on_wall_time_times_the_speed() -> None:
    from datetime import UTC, datetime, timedelta

    from linetrace.streams.line_clock import SILENCE_GRACE, advanced

    t = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    wall = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert advanced(t, wall, wall + SILENCE_GRACE, 60) == t  # within the grace period
    assert advanced(t, wall, wall + SILENCE_GRACE + timedelta(seconds=10), 60) == \
        t + timedelta(minutes=10)
    assert advanced(t, wall, wall + timedelta(days=1), 0) == t  # 0: never on wall time
    assert advanced(None, wall, wall + timedelta(days=1), 1) is None
    assert advanced(t, wall, wall + timedelta(days=1), 1e8) > t  # capped, no overflow
