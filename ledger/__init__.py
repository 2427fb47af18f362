"""linetrace ledger room."""
