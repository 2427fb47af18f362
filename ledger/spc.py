"""SPC charts' frozen baseline limits, and the reads the SPC stage and `linetrace spc` share.

A chart is one (station type, measurement name). Its points are the `measurements` of the
`tests` at stations of that type, in event order: the test's event time, then its event id,
then the measurement's id (the order a replay of the same events gives again). The first
`baseline` conforming points (inside the measurement's own min/max) set its limits once, in
`spc_charts`; they are never recomputed, so the data they judge cannot move them. The rules
and the alarm are pure logic in `spc_rules`; the views of the charts are in `spc_views`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Float, Integer, String, and_, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .models import Base, Measurement, Station, TestRun

ChartKey = tuple[str, str]  # (station type, measurement name)
_SLACK = 16  # rows read beyond a chart's window, for points stored out of event order


class SpcChart(Base):
    """One chart's frozen limits (centre, sigma = MR-bar / d2) from its first points."""

    __tablename__ = "spc_charts"
    station_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    measurement: Mapped[str] = mapped_column(String(256), primary_key=True)
    test: Mapped[str] = mapped_column(String(256))  # the test it belongs to (for people)
    unit: Mapped[str] = mapped_column(String(32))  # unit of measure
    centre: Mapped[float] = mapped_column(Float)
    sigma: Mapped[float] = mapped_column(Float)
    mr_bar: Mapped[float] = mapped_column(Float)
    baseline: Mapped[int] = mapped_column(Integer)  # points the limits were computed from
    established: Mapped[datetime]  # event time of the baseline's last point
    baseline_event: Mapped[str] = mapped_column(String(36))  # that point's test event


@dataclass(frozen=True)
class StoredPoint:
    """One measurement on a chart, as read from the ledger."""

    key: ChartKey
    time: datetime
    event_id: str
    measurement_id: int
    value: float
    unit: str  # unit of measure
    test: str
    serial: str
    station: str
    conforming: bool
    order: tuple[str, str, int]  # (event time, event id, measurement id): event order


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def order_time(t: datetime) -> str:
    """An event time as the first member of a point's order (sorts as the time does)."""
    return utc(t).isoformat(timespec="microseconds")


def parse_order_time(order: tuple[str, str, int]) -> datetime:
    return datetime.fromisoformat(order[0])


def _conforming(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _columns() -> tuple[object, ...]:
    return (Station.station_type, Measurement.name, TestRun.time, TestRun.event_id,
            Measurement.id, Measurement.value, Measurement.unit, Measurement.test,
            TestRun.serial, TestRun.station, Measurement.min, Measurement.max)


def _point(row: Sequence[object]) -> StoredPoint:
    st, name, t, ev, mid, value, unit, test, serial, station, lo, hi = row
    assert isinstance(t, datetime)
    v = float(value)  # type: ignore[arg-type]
    return StoredPoint(key=(str(st), str(name)), time=utc(t), event_id=str(ev),
                       measurement_id=int(mid), value=v,  # type: ignore[call-overload]
                       unit=str(unit), test=str(test), serial=str(serial), station=str(station),
                       conforming=_conforming(v, lo, hi),  # type: ignore[arg-type]
                       order=(order_time(t), str(ev), int(mid)))  # type: ignore[call-overload]


def _joined(*cols: object) -> object:
    return (select(*cols).select_from(Measurement)  # type: ignore[call-overload]
            .join(TestRun, TestRun.id == Measurement.test_id)
            .join(Station, Station.station_id == TestRun.station))


def _order() -> tuple[object, ...]:
    return (TestRun.time, TestRun.event_id, Measurement.id)


def points_of_events(session: Session, events: Collection[tuple[str, str]],
                     station_types: Collection[str]) -> list[StoredPoint]:
    """The measurements of these test events, `(serial, event id)`, at stations of the
    charted types (found through `ix_tests_serial`)."""
    if not events or not station_types:
        return []
    q = _joined(*_columns()).where(  # type: ignore[attr-defined]
        TestRun.serial.in_(sorted({s for s, _ in events})),
        TestRun.event_id.in_(sorted({e for _, e in events})), TestRun.kind == "test",
        Station.station_type.in_(sorted(station_types))).order_by(*_order())
    return [_point(r) for r in session.execute(q)]


def recent_points(session: Session, keys: Collection[ChartKey], per_chart: int
                  ) -> dict[ChartKey, list[StoredPoint]]:
    """The last `per_chart` points of each chart, oldest first (one indexed query a chart).

    Each chart's newest rows are found by test id, walking `ix_measurements_name` backwards
    (a scan of every point and a sort by time cost ~200 ms a batch at 3,000 boards), a few
    more than needed, then put in event order: a point stored late (its partition read late)
    is among them unless more than `_SLACK` later points were stored since."""
    out: dict[ChartKey, list[StoredPoint]] = {}
    for st, name in sorted(keys):
        q = _joined(*_columns()).where(  # type: ignore[attr-defined]
            Measurement.name == name, Station.station_type == st, TestRun.kind == "test"
        ).order_by(Measurement.test_id.desc(), Measurement.id.desc()).limit(per_chart + _SLACK)
        pts = sorted((_point(r) for r in session.execute(q)), key=lambda p: p.order)
        if pts:
            out[(st, name)] = pts[-per_chart:]
    return out


def first_points(session: Session, key: ChartKey, n: int) -> list[StoredPoint]:
    """A chart's first `n` conforming points (its baseline), or fewer if it has fewer."""
    st, name = key
    q = _joined(*_columns()).where(  # type: ignore[attr-defined]
        Station.station_type == st, Measurement.name == name,
        TestRun.kind == "test").order_by(*_order())
    out: list[StoredPoint] = []
    for r in session.execute(q.execution_options(yield_per=200)):
        p = _point(r)
        if p.conforming:
            out.append(p)
            if len(out) >= n:
                break
    return out


def charts(session: Session, keys: Collection[ChartKey] | None = None) -> dict[ChartKey, SpcChart]:
    q = select(SpcChart)
    if keys is not None:
        if not keys:
            return {}
        q = q.where(or_(*(and_(SpcChart.station_type == st, SpcChart.measurement == m)
                          for st, m in keys)))
    return {(c.station_type, c.measurement): c for c in session.scalars(q)}


def chart_keys(session: Session, station_types: Collection[str]) -> list[ChartKey]:
    """Every (station type, measurement) with points, for the charted types."""
    if not station_types:
        return []
    q = _joined(Station.station_type, Measurement.name).where(  # type: ignore[attr-defined]
        Station.station_type.in_(sorted(station_types)), TestRun.kind == "test").distinct()
    return sorted((str(a), str(b)) for a, b in session.execute(q))


def all_points(session: Session, key: ChartKey) -> list[StoredPoint]:
    """Every point of a chart, oldest first (for `linetrace spc`)."""
    st, name = key
    q = _joined(*_columns()).where(  # type: ignore[attr-defined]
        Station.station_type == st, Measurement.name == name,
        TestRun.kind == "test").order_by(*_order())
    return [_point(r) for r in session.execute(q)]


@dataclass(frozen=True)
class StoredResult:
    """One test or inspection result, for first-pass yield and the p-chart."""

    station_type: str
    serial: str
    station: str
    event_id: str
    failed: bool
    time: datetime


def station_types_of(session: Session, stations: Collection[str]) -> dict[str, str]:
    if not stations:
        return {}
    q = select(Station.station_id, Station.station_type).where(
        Station.station_id.in_(sorted(stations)))
    return {str(a): str(b) for a, b in session.execute(q)}


def results_of_types(session: Session, station_types: Collection[str]
                     ) -> dict[str, list[StoredResult]]:
    """Every test and inspection result at stations of these types, in event order."""
    if not station_types:
        return {}
    q = (select(Station.station_type, TestRun.serial, TestRun.station, TestRun.event_id,
                TestRun.result, TestRun.time)
         .join(Station, Station.station_id == TestRun.station)
         .where(Station.station_type.in_(sorted(station_types)))
         .order_by(TestRun.time, TestRun.event_id, TestRun.id))
    out: dict[str, list[StoredResult]] = {}
    for st, serial, station, ev, result, t in session.execute(q):
        out.setdefault(str(st), []).append(StoredResult(str(st), str(serial), str(station),
                                                        str(ev), result == "Failed", utc(t)))
    return out
