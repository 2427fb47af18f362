"""The REST API, `/api/v1` (docs/console.md): one router per module, included by `app.py`."""
