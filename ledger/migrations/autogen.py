"""Write a new migration from the models: `python -m linetrace.ledger.migrations.autogen MSG`.

Compares the models with a scratch SQLite database brought to the current head, so the new
revision holds exactly the change. Review the generated file before committing it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from linetrace.ledger.schema import _config, current


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m linetrace.ledger.migrations.autogen MESSAGE", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        cfg = _config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        # Write into the source tree (an editable install may point __file__ at a link farm).
        versions = Path(__file__).resolve().parent / "versions"
        cfg.set_main_option("version_locations", str(versions))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=argv[0], autogenerate=True, version_path=str(versions))
        print(f"head was {current(engine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
