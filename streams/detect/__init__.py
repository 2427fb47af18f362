"""Detectors: pipeline stages that find what is going wrong on the line (DOMAIN.md §4-§6, §8).

Each detector is pure logic over plain data (unit-tested without Kafka) wrapped in a `Stage`:
`load` reads what it needs from the ledger (its state is rebuilt from SQL, never kept only in
memory), `decide` returns `Decisions` whose `conditions` the alert engine turns into alerts.
The burn-in verdict is a stage here too: it decides, it does not alert.
"""
