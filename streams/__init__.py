"""The Faust worker: ingest, ledger writing, orchestration and detectors."""
