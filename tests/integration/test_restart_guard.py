"""The broker-restart guard firing (issue 8, item 22): the embedded broker restarts empty under
a running worker and its new log grows past the worker's old position before the worker reads
again. Without the guard the worker goes on at the old offset: it writes the newer half of the
new log first, and when the rebalance later takes it back to offset 0 (the broker's incarnation
changed) the older half is out of order for its station, quarantined as `seq.reordered`: valid
events lost. The worker's own check for a hole in its positions (`processor.gaps`) cannot see
it, since the old position is where the ledger stands in the incarnation the worker still
believes in.

Real processes: `linetrace broker` (SIGKILLed, started again empty on the same port) and
`linetrace worker` (SIGSTOPped meanwhile, so that the new log is there when it reads again;
its group heartbeats and commits slowly, so that it reads before the group notices). With the
guard's check disabled, 20 of the 60 events were quarantined in 2 of 3 runs (in the third the
group rebalanced first, and the resume at the ledger's positions, another incarnation, read
from 0). The worker's log shows which came first: the guard's rewind, or a second resume of
line.events at the ledger's positions (the group noticed first; since issue 10's telemetry
consumer group joins beside Faust's, this order is the more frequent one under load).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, Rejected
from linetrace.schemas import signing

from ..conftest import Proc, run_cli, wait_for
from .test_ingest import produce, work_started
from .test_station_durability import _free_port, _kill, _need_broker, _start_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STATION, UNIT = "ict-57", "PCBA-RG-000001"  # one unit: one partition, one station's numbers
REWOUND = "broker restarted empty: rewound"
#: `linetrace worker` whose consumer group heartbeats every 10 s (30 s session) and commits
#: every 30 s: the group notices the new broker that much later, so the consumer reads the new
#: log, and the worker writes from it, before any rebalance; in production that is the window
#: between the consumer's first fetch from the new broker and the group noticing.
SLOW_GROUP_WORKER = """
import sys
import faust
from linetrace.streams import worker
worker.EMBEDDED_TIMING = worker.KAFKA_TIMING = worker.GroupTiming(30.0, 10.0, 3.0)
_app_init = faust.App.__init__
def _slow_commits(self, *args, **kw):
    _app_init(self, *args, **{**kw, "broker_commit_interval": 30.0})
faust.App.__init__ = _slow_commits
from linetrace.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_broker_restarted_empty_under_a_running_worker_is_read_again_from_the_start(
        line_dir: Path, tmp_path: Path) -> None:
    _need_broker()
    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = _start_broker(line_dir, port)
    key_file = tmp_path / "ict.key"
    assert run_cli("stations", "keygen", "--out", str(key_file), data_dir=line_dir).returncode == 0
    r = run_cli("stations", "enroll", STATION, "--type", "ict", "--public-key",
                f"{key_file}.pub", data_dir=line_dir)
    assert r.returncode == 0, r.stderr
    key = signing.load_private_key_pem(key_file.read_bytes())
    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")

    def send(seqs: range) -> None:
        values = [work_started(STATION, UNIT, n) for n in seqs]
        asyncio.run(produce(bootstrap, [("line.events", UNIT.encode(), v,
                                         signing.sign_value(v, key)) for v in values]))

    def stored() -> list[int]:
        with ledger.reader() as s:
            return sorted(n or 0 for n in s.scalars(select(EventRow.stationseq)
                                                    .where(EventRow.source == STATION)))

    def rejected() -> list[str]:
        with ledger.reader() as s:
            return [f"{r.code}: {r.message}" for r in s.scalars(select(Rejected))]

    worker = Proc([sys.executable, "-c", SLOW_GROUP_WORKER, "worker", "--data-dir",
                   str(line_dir)], line_dir / "worker.out", env={"LINETRACE_BATCH_WINDOW": "0.02"})
    try:
        send(range(1, 21))  # the old log: offsets 0-19
        wait_for(lambda: stored() == list(range(1, 21)), 120, what="the first 20 events stored")
        os.killpg(worker.proc.pid, signal.SIGSTOP)
        try:
            _kill(broker)
            broker = _start_broker(line_dir, port)  # empty: topics, offsets and groups gone
            send(range(21, 61))  # the new log: offsets 0-39, longer than the old position 20
        finally:
            os.killpg(worker.proc.pid, signal.SIGCONT)
        wait_for(lambda: len(stored()) + len(rejected()) >= 60, 120,
                 what="the new log read by the worker")
        from linetrace.cli.supervisor import drained

        wait_for(lambda: drained(ledger, bootstrap), 60, 0.5, what="the worker to drain")
        assert rejected() == []  # nothing out of order: no valid event quarantined
        assert stored() == list(range(1, 61))  # every event, once
        log = worker.log.read_text(errors="replace")
        # Either the guard saw the new log first (rewound), or the group noticed the new broker
        # before the consumer fetched from it and the partitions were resumed at the ledger's
        # positions in the new incarnation (a second resume of line.events). Since the worker
        # runs a second consumer group (line.telemetry), the second order happens in some runs;
        # both keep every event, which the two assertions above check.
        resumes = re.findall(r"resumed \d+ partition\(s\) at the ledger's positions: line\.events", log)
        assert REWOUND in log or len(resumes) >= 2, "neither the guard nor a rebalance"
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- worker\n{worker.tail()}") from None
    finally:
        worker.stop()
        broker.stop()
        ledger.close()
