"""Every LINETRACE_* setting, declared once: variable, default, and what it does.

The CLI reads the environment here, once, and passes plain values into the rooms (rooms never
read environment variables). `linetrace config` prints this table with secrets masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from linetrace.schemas.errors import LinetraceError


#: LINETRACE_QUALITY_RELEASE's values (console/config.py `QualityRelease`).
QUALITY_RELEASES: tuple[str, ...] = ("console", "user-keys")


class ConfigurationError(LinetraceError):
    """A LINETRACE_* setting (or a file it names) is wrong: the command exits 2."""

    code = "config.invalid"


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: str
    doc: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "LINETRACE_DATA_DIR", "./linetrace-data",
            "Where the embedded defaults keep their files: ledger.db, keys/, broker.url, "
            "station state. `--data-dir` overrides it."),
    Setting("db", "LINETRACE_DB", "sqlite:///<data dir>/ledger.db",
            "SQLAlchemy URL of the ledger database. `postgresql://user:pw@host:5432/db` is "
            "accepted and normalised to psycopg 3.", secret=True),
    Setting("broker", "LINETRACE_BROKER", "<data dir>/broker.url",
            "Kafka bootstrap as `kafka://host:port[,host:port]`. Unset: read from "
            "<data dir>/broker.url, which `linetrace up` / `linetrace broker` write."),
    Setting("origin", "LINETRACE_ORIGIN", "linetrace.local/ledger/v1",
            "Name of the plant key and origin line of the log's checkpoints; auditors pin it."),
    Setting("group", "LINETRACE_GROUP", "linetrace-worker",
            "Kafka consumer group of the workers (line.events, line.receipts, line.stations); "
            "line.telemetry is read in the group `<this>.telemetry`."),
    Setting("batch_size", "LINETRACE_BATCH_SIZE", "500",
            "Most events the worker writes in one DB transaction."),
    Setting("batch_window", "LINETRACE_BATCH_WINDOW", "0.05",
            "Seconds the worker waits to fill a batch before writing what it has."),
    Setting("checkpoint_leaves", "LINETRACE_CHECKPOINT_LEAVES", "1000",
            "The worker signs a log checkpoint once the log grew by this many leaves..."),
    Setting("checkpoint_seconds", "LINETRACE_CHECKPOINT_SECONDS", "60",
            "...or grew at all and the last checkpoint is this many seconds old."),
    Setting("log_level", "LINETRACE_LOG_LEVEL", "info", "debug, info, warning or error."),
    Setting("clock_bound_seconds", "LINETRACE_CLOCK_BOUND_SECONDS", "604800",
            "An event whose time is more than this many seconds (default 7 days) from its "
            "partition's line clock is stored but flagged (`linetrace flags`) and does not "
            "move the clock. Never a reason to refuse an event."),
    Setting("line_speed", "LINETRACE_LINE_SPEED", "1",
            "Line seconds per wall second by which a silent partition's line clock advances "
            "(after 10 s of silence), so checks that wait on the line clock (a sub-assembly's "
            "events, a unit's max cycle time) are decided when nothing more arrives. 1 for a "
            "real line; `up` passes the simulator's speed; 0 = never advance on wall time (the "
            "line clock is event time alone). See docs/routes.md."),
    Setting("routes", "LINETRACE_ROUTES", "(none: the packaged routes only)",
            "A folder of the plant's route files, one per product, named after it (A.json): "
            "each adds a product or replaces the packaged route of the same product. Checked "
            "at the start of `worker`, `up` and `simulate` like `linetrace routes check`; "
            "any problem refuses to start (exit 2). See docs/routes.md."),
    Setting("burnin_limits", "LINETRACE_BURNIN_LIMITS",
            "(none: the packaged DOMAIN.md defaults)",
            "A JSON file of per-SKU burn-in limits and hard-fail thresholds (the shape of "
            "ledger/data/burnin_limits.json) that the worker's burn-in verdicts decide by; "
            "each verdict records its SHA-256 and version. A malformed file refuses to start "
            "(exit 2). See docs/burnin.md."),
    Setting("golden_firmware", "LINETRACE_GOLDEN_FIRMWARE",
            "(none: the packaged golden images, ledger/data/golden_firmware.json)",
            "A JSON file of the plant's golden firmware hashes ({\"golden\": [{\"image\", "
            "\"version\", \"sha256\"}]}) that the supply-chain detector checks every "
            "`firmware.flashed` against. A malformed file refuses to start (exit 2). See "
            "docs/detection.md."),
    Setting("spc", "LINETRACE_SPC", "(none: the packaged ledger/data/spc.json)",
            "A JSON file of the plant's SPC charts (which station types and measurements are "
            "charted, baseline size, which charts hold the step). A malformed file refuses to "
            "start (exit 2). See docs/detection.md."),
    Setting("telemetry_retention_days", "LINETRACE_TELEMETRY_RETENTION_DAYS", "90",
            "Days (by event time) raw burn-in telemetry is kept before `linetrace telemetry "
            "prune` drops its bytes (each event's SHA-256 is kept forever). Nothing prunes "
            "on its own: schedule the command. See docs/operations.md."),
    Setting("user_key", "LINETRACE_USER_KEY", "(none)",
            "Path to the acting user's Ed25519 private key (PEM), for holds, releases, "
            "dispositions and user administration (`linetrace users keygen` makes one). "
            "Every such command signs a statement with it; see docs/security.md."),
    Setting("console_host", "LINETRACE_CONSOLE_HOST", "127.0.0.1",
            "Address the web console listens on (`linetrace console`, `linetrace up`). "
            "127.0.0.1 keeps it on this machine; 0.0.0.0 serves the plant network (put it "
            "behind HTTPS there). `--host` overrides it. See docs/console.md."),
    Setting("console_port", "LINETRACE_CONSOLE_PORT", "8080",
            "TCP port of the web console. `linetrace console` refuses a port in use (exit 2); "
            "`linetrace up` takes the next free one and says so. `--port` / `--console-port` "
            "override it. See docs/console.md."),
    Setting("console_https", "LINETRACE_CONSOLE_HTTPS", "0",
            "1 when people reach the console over HTTPS (a TLS-terminating reverse proxy in "
            "front of it): its session cookie is then marked Secure, so a browser never sends "
            "it over plain HTTP. 0 (default) for http://127.0.0.1. See docs/operations.md."),
    Setting("quality_release", "LINETRACE_QUALITY_RELEASE", "console",
            "How a quality hold is released from the console: `console` (two quality users' "
            "approvals in the console, each attested by the console's key, release it) or "
            "`user-keys` (each approval needs the quality user's own key: the console refuses "
            "and says to run `linetrace hold release`). See docs/console.md and "
            "docs/security.md."),
)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    db: str
    broker: str | None
    origin: str
    group: str
    batch_size: int
    batch_window: float
    checkpoint_leaves: int
    checkpoint_seconds: float
    log_level: str
    clock_bound_seconds: float
    routes: Path | None
    telemetry_retention_days: float
    sources: Mapping[str, str]
    user_key: Path | None = None
    line_speed: float = 1.0
    burnin_limits: Path | None = None
    golden_firmware: Path | None = None
    spc: Path | None = None
    console_host: str = "127.0.0.1"
    console_port: int = 8080
    quality_release: str = "console"
    console_https: bool = False

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def broker_file(self) -> Path:
        return self.data_dir / "broker.url"

    def bootstrap(self) -> str:
        """host:port list of the broker, or a ConfigurationError saying how to get one."""
        url = self.broker
        if url is None and self.broker_file.exists():
            url = self.broker_file.read_text().strip()
        if not url:
            raise ConfigurationError(
                f"no broker configured: set LINETRACE_BROKER=kafka://host:port, or start the "
                f"embedded one with `linetrace broker --data-dir {self.data_dir}` (or "
                f"`linetrace up`), which writes {self.broker_file}")
        return parse_broker_url(url)

    def masked(self) -> list[tuple[str, str, str, str]]:
        """(env var, effective value, where it came from, doc) with secrets masked."""
        out = []
        for s in SETTINGS:
            value = str(getattr(self, s.name))
            if s.name == "broker" and self.broker is None:
                try:
                    value = "kafka://" + self.bootstrap()
                except ConfigurationError:
                    value = "(none: no broker.url yet)"
            if s.secret:
                value = mask_url(value)
            out.append((s.env, value, self.sources.get(s.name, "default"), s.doc))
        return out


def mask_url(url: str) -> str:
    return re.sub(r"(//[^:/@]+:)[^@]+@", r"\1****@", url)


def parse_broker_url(url: str) -> str:
    if not url.startswith("kafka://"):
        raise ConfigurationError(
            f"broker URL {url!r} must look like kafka://host:port (LINETRACE_BROKER)")
    hosts = url[len("kafka://"):].rstrip("/")
    for h in hosts.split(","):
        if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5}", h):
            raise ConfigurationError(f"broker address {h!r} is not host:port")
    return hosts


def load(env: Mapping[str, str] | None = None, *, data_dir: str | None = None) -> Settings:
    env = os.environ if env is None else env
    sources: dict[str, str] = {}
    raw: dict[str, str] = {}
    for s in SETTINGS:
        if s.env in env and env[s.env] != "":
            raw[s.name] = env[s.env]
            sources[s.name] = s.env
    if data_dir is not None:
        raw["data_dir"], sources["data_dir"] = data_dir, "--data-dir"
    ddir = Path(raw.get("data_dir", "./linetrace-data")).expanduser().resolve()
    db = raw.get("db", f"sqlite:///{ddir / 'ledger.db'}")
    try:
        batch_size = int(raw.get("batch_size", "500"))
        batch_window = float(raw.get("batch_window", "0.05"))
        checkpoint_leaves = int(raw.get("checkpoint_leaves", "1000"))
        checkpoint_seconds = float(raw.get("checkpoint_seconds", "60"))
        clock_bound_seconds = float(raw.get("clock_bound_seconds", "604800"))
        retention_days = float(raw.get("telemetry_retention_days", "90"))
        line_speed = float(raw.get("line_speed", "1"))
    except ValueError as e:
        raise ConfigurationError(f"a numeric LINETRACE_* setting is not a number: {e}") from None
    if checkpoint_leaves < 1 or checkpoint_seconds <= 0:
        raise ConfigurationError("LINETRACE_CHECKPOINT_LEAVES must be >= 1 and "
                                 "LINETRACE_CHECKPOINT_SECONDS > 0")
    if not 0 < clock_bound_seconds < 10_000 * 365 * 86_400:
        raise ConfigurationError("LINETRACE_CLOCK_BOUND_SECONDS must be a positive number of "
                                 "seconds (default 604800, 7 days)")
    if not 1 <= retention_days < 100_000:
        raise ConfigurationError("LINETRACE_TELEMETRY_RETENTION_DAYS must be at least 1 day "
                                 "(default 90)")
    if not 0 <= line_speed < 1e9:  # also refuses nan
        raise ConfigurationError("LINETRACE_LINE_SPEED must be 0 (never advance the line clock "
                                 "on wall time) or a positive speed factor (default 1)")
    if batch_size < 1 or batch_window <= 0:
        raise ConfigurationError("LINETRACE_BATCH_SIZE must be >= 1 and LINETRACE_BATCH_WINDOW > 0")
    console_host = raw.get("console_host", "127.0.0.1").strip()
    if not re.fullmatch(r"[A-Za-z0-9_.\-:\[\]]{1,253}", console_host):
        raise ConfigurationError(f"LINETRACE_CONSOLE_HOST={console_host!r} is not a host name "
                                 "or address (e.g. 127.0.0.1, 0.0.0.0, console.plant.local)")
    try:
        console_port = int(raw.get("console_port", "8080"))
    except ValueError:
        console_port = -1
    if not 0 <= console_port <= 65535:
        raise ConfigurationError(f"LINETRACE_CONSOLE_PORT={raw.get('console_port')!r}: use a "
                                 "TCP port 1-65535 (default 8080; 0 = any free port)")
    https = raw.get("console_https", "0").strip().lower()
    if https not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigurationError(f"LINETRACE_CONSOLE_HTTPS={https!r}: use 1 (the console is "
                                 "reached over HTTPS: Secure cookies) or 0 (default)")
    quality_release = raw.get("quality_release", "console").strip().lower()
    if quality_release not in QUALITY_RELEASES:
        raise ConfigurationError(
            f"LINETRACE_QUALITY_RELEASE={raw.get('quality_release')!r}: use `console` (two "
            "quality users' console approvals release a quality hold) or `user-keys` (they "
            "must sign with their own keys, `linetrace hold release`)")
    broker = raw.get("broker")
    if broker is not None:
        parse_broker_url(broker)
    level = raw.get("log_level", "info").lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigurationError(f"LINETRACE_LOG_LEVEL={level!r}: use debug, info, warning or error")
    return Settings(data_dir=ddir, db=db, broker=broker, origin=raw.get("origin", "linetrace.local/ledger/v1"),
                    group=raw.get("group", "linetrace-worker"), batch_size=batch_size,
                    batch_window=batch_window, checkpoint_leaves=checkpoint_leaves,
                    checkpoint_seconds=checkpoint_seconds, log_level=level,
                    clock_bound_seconds=clock_bound_seconds,
                    routes=Path(raw["routes"]).expanduser().resolve() if "routes" in raw else None,
                    telemetry_retention_days=retention_days, sources=sources,
                    user_key=(Path(raw["user_key"]).expanduser().resolve()
                              if "user_key" in raw else None),
                    line_speed=line_speed,
                    burnin_limits=(Path(raw["burnin_limits"]).expanduser().resolve()
                                   if "burnin_limits" in raw else None),
                    golden_firmware=(Path(raw["golden_firmware"]).expanduser().resolve()
                                     if "golden_firmware" in raw else None),
                    spc=Path(raw["spc"]).expanduser().resolve() if "spc" in raw else None,
                    console_host=console_host, console_port=console_port,
                    quality_release=quality_release,
                    console_https=https in ("1", "true", "yes"))


assert {s.name for s in SETTINGS} == {f.name for f in fields(Settings)} - {"sources"}
