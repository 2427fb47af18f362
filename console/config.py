"""What the console needs to run, as plain values: the CLI reads the LINETRACE_* settings
(`linetrace console`, `linetrace up`) and builds this; the console reads no environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.schemas.routes import RouteBook

QualityRelease = Literal["console", "user-keys"]


@dataclass(frozen=True)
class ConsoleConfig:
    """- `db_url`: the ledger database (SQLAlchemy URL);
    - `data_dir`, `keys_dir`: where the line's files and keys are;
    - `routes`: the checked routes in force (the interlock judges by them);
    - `plant_key`: signs the system events the console's actions record;
    - `console_key`: attests the signed-in user's statements (`ledger/console_key.py`);
    - `quality_release`: `console` (two quality users' console approvals release a quality
      hold) or `user-keys` (they must sign with their own keys: `linetrace hold release`);
    - `origin`: the log's origin line (checkpoints);
    - `secure_cookies`: set the cookies' Secure flag (behind HTTPS);
    - `sse_poll`: seconds between the alert stream's looks at the ledger;
    - `spc_file`: the plant's SPC chart file (LINETRACE_SPC); None: the packaged one."""

    db_url: str
    data_dir: Path
    keys_dir: Path
    routes: RouteBook
    plant_key: Ed25519PrivateKey
    console_key: Ed25519PrivateKey
    quality_release: QualityRelease = "console"
    origin: str = "linetrace.local/ledger/v1"
    secure_cookies: bool = False
    sse_poll: float = 0.2
    session_idle: timedelta = timedelta(hours=8)
    spc_file: Path | None = None
