"""An embedded PostgreSQL kept in the data directory, for installs without DATABASE_URL."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

# pgserver logs every step at INFO and warns when XDG_RUNTIME_DIR is unset; neither helps an operator.
logging.getLogger("pgserver").setLevel(logging.WARNING)


def start_embedded(data_dir: Path) -> tuple[str, Any]:
    """Start (or join) the embedded server; returns its URL and a handle that stops it when released."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = data_dir.resolve() / "postgres"
        server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    return str(server.get_uri()), server


def stop_embedded(handle: Any) -> None:
    handle.cleanup()
