"""The supervisors' web console and REST API (arrives with the console issue)."""
