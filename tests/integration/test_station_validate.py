"""`StationClient.validate`: a station asks the console's interlock over real HTTP (uvicorn
serving the console app on a free port), with its timeout and its fail-closed / fail-open
choice when the console cannot answer (nothing listening, a console that never answers)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from linetrace.schemas import signing
from linetrace.stations.client import StationClient
from linetrace.stations.errors import StationError
from linetrace.stations.interlock import UNAVAILABLE, InterlockVerdict
from linetrace.stations.sync_client import SyncStationClient

from ..console.conftest import Console, make_console
from ..console.live import free_port, serve
from .route_line import KEYS, Batches, serial_on

pytestmark = pytest.mark.integration


@pytest.fixture
def console(db_url: str, tmp_path: Path) -> Iterator[Console]:
    c = make_console(db_url, tmp_path)
    yield c
    c.close()
    c.ledger.close()


def station(tmp_path: Path, station_id: str = "firmware-01", **options: object) -> StationClient:
    key = KEYS.get(station_id) or signing.generate_key()  # not one of the line's: not enrolled
    return StationClient(station_id, key, "127.0.0.1:1",
                         tmp_path / f"spool-{station_id}-{time.monotonic_ns()}",
                         **options)  # type: ignore[arg-type]


def ask(client: StationClient, serial: str, step: int, **kw: list[str]) -> InterlockVerdict:
    return asyncio.run(client.validate(serial, step, **kw))


def test_a_station_asks_the_console(console: Console, tmp_path: Path) -> None:
    line = Batches(console.ledger, console.data_dir / "keys")
    serial = serial_on("SRV-I")
    for step in (50, 60, 70):
        line.flow.visit(serial, step)
    line.write()
    token = console.token("vic", "interlock")
    with serve(console.app) as base:
        fw = station(tmp_path, console_url=base, console_token=token)
        ok = ask(fw, serial, 80)
        assert ok == InterlockVerdict(True, ()) and not ok.unavailable
        burnin = station(tmp_path, "burnin-01", console_url=base, console_token=token)
        skipped = ask(burnin, serial, 90)
        assert not skipped.allowed and skipped.codes == ["route.skipped_step"]
        assert skipped.to_json()["reasons"][0]["message"].startswith("step 80")

        hold = console.as_("sam").post("/api/v1/holds", json={
            "scope": "unit", "target": serial, "reason": "check it"}).json()
        held = ask(fw, serial, 80)
        assert not held.allowed and hold["id"] in held.reasons[0].message

        # the blocking client for station code that is not async
        sync = SyncStationClient("firmware-01", KEYS["firmware-01"], "127.0.0.1:1",
                                 tmp_path / "sync-spool", console_url=base,
                                 console_token=token)
        sync.start()
        try:
            assert sync.validate(serial, 80).codes == held.codes
        finally:
            sync.stop(0)

        # refusals of the question are errors, never a fail-open pass
        for client, says in (
                (station(tmp_path, console_url=base, console_token="lt_wrong",
                         fail_closed=False), "401"),
                (station(tmp_path, "aoi-77", console_url=base, console_token=token),
                 "404 validate.unknown_station")):
            with pytest.raises(StationError) as e:
                ask(client, serial, 80)
            assert e.value.code == "interlock.refused" and says in str(e.value), str(e.value)
        with pytest.raises(StationError) as e:
            ask(station(tmp_path), serial, 80)
        assert e.value.code == "interlock.not_configured"


def test_fail_closed_and_fail_open_when_the_console_cannot_answer(tmp_path: Path) -> None:
    nothing = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    closed = ask(station(tmp_path, console_url=nothing, console_token="lt_x"), "SRV-1", 80)
    assert closed.allowed is False and closed.unavailable
    assert closed.codes == [UNAVAILABLE] and "fail-closed" in closed.reasons[0].message
    opened = ask(station(tmp_path, console_url=nothing, console_token="lt_x",
                         fail_closed=False), "SRV-1", 80)
    assert opened.allowed is True and opened.unavailable
    assert opened.codes == [UNAVAILABLE] and "fail-open" in opened.reasons[0].message

    # a console that accepts the connection and never answers: the timeout decides
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        slow = ask(station(tmp_path, console_url=url, console_token="lt_x",
                           validate_timeout_s=0.5), "SRV-1", 80)
        took = time.monotonic() - started
    assert slow.allowed is False and slow.codes == [UNAVAILABLE]
    assert "0.5 s" in slow.reasons[0].message or "timed out" in slow.reasons[0].message
    assert took < 10, took  # bounded by the timeout, not by the silent server

    with pytest.raises(StationError) as e:
        station(tmp_path, console_url="console.local:8080")
    assert e.value.code == "interlock.not_configured"
