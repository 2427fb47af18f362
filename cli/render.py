"""Text renderings of the ledger's read models: what the query commands print without --json.

Every value that came from the ledger goes through `say` or `print_table`, which escape control
characters, so what a station sent can never drive the terminal.
"""

from __future__ import annotations

import json
from typing import Any

from linetrace.ledger.views import (
    HistoryEntry, LedgerEvent, LotReport, RejectedRecord, StationReport, Trace,
    station_state_name,
)

from .output import print_table, say


def _slot_or_ref(slot: int | None, ref: str | None) -> object:
    return slot if slot is not None else ref


def _compact(data: dict[str, Any]) -> str:
    """An event's data on one line, whole (never cut in the middle)."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _history_detail(h: HistoryEntry) -> str:
    d = h.data
    match h.type:
        case "work.started":
            return str(d.get("operation", ""))
        case "work.completed" | "unit.tested" | "unit.inspected":
            return str(d.get("result", ""))
        case "materials.installed":
            items = d.get("items", [])
            return ", ".join(str(i.get("serial") or f"{i.get('qty') or 1} x {i.get('mpn')}")
                             for i in items)
        case "materials.uninstalled":
            removed = ", ".join(str(i.get("serial") or i.get("ref") or i.get("slot") or
                                    i.get("lot")) for i in d.get("items", []))
            extra = " ".join(f"{k} {d[k]}" for k in ("defect", "note") if d.get(k))
            return f"{removed}: {d.get('reason')}" + (f" ({extra})" if extra else "")
        case "unit.repaired":
            note = d.get("note")
            return str(d.get("result")) + (f": {note}" if note else "")
        case "unit.scrapped":
            return str(d.get("reason", ""))
        case "firmware.flashed":
            return f"{d.get('component')} {d.get('version')}"
        case "unit.packed" | "unit.shipped":
            return f"order {d.get('order')} carton {d.get('carton')}"
        case _:
            return ""


def trace_text(t: Trace) -> None:
    say(f"{t.serial}  {t.product} ({t.kind})  state {t.state}  step {t.step}")
    if t.work_order or t.order:
        say("  ".join(x for x in (f"work order {t.work_order}" if t.work_order else "",
                                  f"order {t.order}  carton {t.carton}" if t.order else "") if x))
    if t.installed_in:
        say(f"installed in {t.installed_in} (`linetrace trace {t.installed_in}`)")
    say(f"route {t.route.product} revision {t.route.revision}  sha256 {t.route.sha256}"
        if t.route else "route (none recorded)")
    say(f"updated {t.updated}")
    if t.holds:
        say()
        say(f"holds ({len(t.holds)}; `linetrace holds --all` has each in full):")
        print_table([[h.id, h.state, h.code, h.placed, h.released, h.decision, h.reason]
                     for h in t.holds],
                    ["HOLD", "STATE", "CODE", "PLACED", "ENDED", "DECISION", "REASON"])
    if t.violations:
        say()
        say(f"route violations ({len(t.violations)}):")
        print_table([[v.time, v.step, v.station, v.code, v.message] for v in t.violations],
                    ["TIME", "STEP", "STATION", "CODE", "MESSAGE"])
    say()
    say(f"parts ({len(t.parts)}):")
    print_table([[p.serial or f"qty {p.qty}", p.category, p.mpn, p.lot, p.parent,
                  _slot_or_ref(p.slot, p.ref)] for p in t.parts],
                ["SERIAL", "CATEGORY", "MPN", "LOT", "PARENT", "SLOT/REF"])
    if t.removed:
        say()
        say(f"removed parts ({len(t.removed)}):")
        print_table([[p.serial or f"qty {p.qty}", p.category, p.mpn, p.lot, p.parent,
                      _slot_or_ref(p.slot, p.ref), p.removed, p.reason] for p in t.removed],
                    ["SERIAL", "CATEGORY", "MPN", "LOT", "PARENT", "SLOT/REF", "REMOVED",
                     "REASON"])
    say()
    say(f"operations ({len(t.operations)}):")
    print_table([[o.step, o.operation, o.station, o.operator, o.result, o.started, o.completed]
                 for o in t.operations],
                ["STEP", "OPERATION", "STATION", "OPERATOR", "RESULT", "STARTED", "COMPLETED"])
    say()
    say(f"tests ({len(t.tests)}):")
    print_table([[x.time, x.kind, x.method, x.result, x.station, "; ".join(x.failure_reasons())]
                 for x in t.tests],
                ["TIME", "KIND", "METHOD", "RESULT", "STATION", "FAILURE REASONS"])
    say()
    say(f"firmware ({len(t.firmware)}):")
    print_table([[f.component, f.version, f.image, f.target, f.sha256, f.station, f.time]
                 for f in t.firmware],
                ["COMPONENT", "VERSION", "IMAGE", "TARGET", "SHA256", "STATION", "TIME"])
    say()
    say(f"history ({len(t.history)} events):")
    print_table([[h.time, h.type, h.station, h.step, h.operator, _history_detail(h)]
                 for h in t.history], ["TIME", "TYPE", "STATION", "STEP", "OPERATOR", "DETAIL"])


def lot_text(lot: LotReport) -> None:
    say(f"lot {lot.lot}  {lot.mpn}  supplier {lot.supplier}  date code {lot.date_code}  "
        f"qty {lot.qty}")
    say(f"received {lot.received} at {lot.station}; {len(lot.serials)} serials; "
        f"installed {lot.installs} times in {lot.units} units")
    avl = lot.avl
    if avl is None:
        say("approved vendor list: not checked yet (no material.checked for this receipt)")
    else:
        say(f"approved vendor list: {avl.result}" + (f": {avl.reason}" if avl.reason else "")
            + f"  (list sha256 {avl.avl_sha256}, checked {avl.time})")
    for d in lot.documents:
        say(f"  document {d.kind}: sha256 {d.sha256}" + (f"  {d.name}" if d.name else ""))
    for e in lot.events:
        say(f"  {e.time}  {e.type}  {e.source}")


def _station_event(e: LedgerEvent) -> str:
    d = e.data
    match e.type:
        case "station.state":
            reason = d.get("reason")
            return f"{station_state_name(d.get('state'))}" + (f": {reason}" if reason else "")
        case "fault.occurred":
            text = f"{d.get('fault_id')} {d.get('severity')} {d.get('code')}: {d.get('cause')}"
            return text + (f" ({d['description']})" if d.get("description") else "")
        case "fault.cleared":
            return f"{d.get('fault_id')} cleared"
        case "station.enrolled":
            return f"key {d.get('keyid')} enrolled ({d.get('station_type')})"
        case "station.revoked":
            reason = d.get("reason")
            return f"key {d.get('keyid')} revoked" + (f": {reason}" if reason else "")
        case _:
            return _compact(d)


def station_text(st: StationReport, last: int = 20) -> None:
    say(f"{st.station_id} ({st.station_type})  enrolled {st.enrolled}  "
        f"state {st.state_name or 'none reported'}")
    for k in st.keys:
        say(f"  key {k.keyid}  enrolled {k.enrolled}"
            + (f"  revoked {k.revoked}" if k.revoked else ""))
    for f in st.open_faults:
        say(f"  open fault {_station_event(f)}")
    say("  events: " + ", ".join(f"{t} {n}" for t, n in sorted(st.events_by_type.items())))
    shown = st.events[-last:]
    if len(st.events) > len(shown):
        say(f"  (the last {len(shown)} of {len(st.events)} station events; --json has all)")
    for e in shown:
        say(f"  {e.time}  {e.type}  {_station_event(e)}")


def rejected_text(rows: list[RejectedRecord]) -> None:
    print_table([[r.id, r.recorded, r.destination, r.code, r.stage,
                  f"{r.topic}[{'' if r.partition is None else r.partition}]"
                  f"@{'' if r.offset is None else r.offset}", r.source, r.event_id, r.message]
                 for r in rows],
                ["ID", "RECORDED", "DESTINATION", "CODE", "STAGE", "FROM", "SOURCE", "EVENT",
                 "MESSAGE"])
    say(f"{len(rows)} rejected records")
