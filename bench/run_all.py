"""Run every benchmark in turn (`make bench`); each writes its own docs/benchmarks.md section.

Long: the ledger bench alone seeds 100,000 servers (~10 min). Pass a name to run one:
`python bench/run_all.py log`.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = {
    "log": ["-m", "bench.bench_log"],
    "ledger": ["-m", "bench.bench_ledger"],
    "spool": ["-m", "bench.bench_spool"],
    "otel": ["-m", "bench.bench_otel"],
    "recovery": ["-m", "bench.bench_recovery"],
}


def main(names: list[str]) -> int:
    for name in names or list(BENCHES):
        print(f"== bench {name}", flush=True)
        rc = subprocess.call([sys.executable, *BENCHES[name]])
        if rc != 0:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
