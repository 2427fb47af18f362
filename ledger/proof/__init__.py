"""The ledger's proof code: everything an auditor's offline `linetrace verify` runs.

Merkle math (`merkle`), signed notes and checkpoints (`note`, `checkpoints`), leaf encoding
(`leaf`), the HBOM and its as-built checks (`hbom`) and evidence-bundle verification
(`verify`). It imports no SQLAlchemy, no Alembic, no database driver and no ledger module
outside this package (import-linter contracts in pyproject.toml), so `pip install linetrace`
on an auditor's laptop can check a bundle with no database, broker or worker.
"""
