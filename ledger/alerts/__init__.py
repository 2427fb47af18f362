"""Alerts: what detectors find (`conditions`), the ISA-18.2 engine that keeps their state
(`engine`), what operators do with them, and the views and KPIs the CLI and console show."""
