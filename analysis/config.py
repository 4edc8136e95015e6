"""Paths and defaults, in one place: where the tool reads and writes when no path is given.

The data dir is ``--data-dir`` (CLI), else ``RCA_HOME``, else ``./data``: the same for the CLI, the app and the
reports.  It holds the default store (``rca.sqlite``) and the built-in sample (``sample.sqlite``); reports go
to ``$RCA_HOME/reports``, else ``./reports``.  Tests point ``RCA_HOME`` at their temp dir, so no run writes
into the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROJECT_ROOT", "NOTEBOOKS", "HUB_URL", "ROUTER_URL", "USER_AGENT", "set_data_dir", "data_dir",
           "default_store", "sample_store", "sample_blocklist", "reports_dir", "missing_store_hint"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT_ROOT / "notebooks"  # the design card keeps them at the top level
# The real endpoints stay the defaults: a user with a network and a token scans Hugging Face itself.
HUB_URL = "https://huggingface.co"
ROUTER_URL = "https://router.huggingface.co/v1"
USER_AGENT = "catalog-rca/0.2"

_data_dir_flag: Path | None = None


def set_data_dir(path: str | os.PathLike[str] | None) -> None:
    """Set the data dir from ``--data-dir`` (``None`` clears it)."""
    global _data_dir_flag
    _data_dir_flag = Path(path) if path else None


def _home() -> Path | None:
    value = os.environ.get("RCA_HOME", "").strip()
    return Path(value) if value else None


def data_dir() -> Path:
    """``--data-dir``, else ``RCA_HOME``, else ``./data``."""
    return _data_dir_flag or _home() or Path("data")


def default_store() -> Path:
    """The store commands use without ``--store``: ``<data dir>/rca.sqlite``."""
    return data_dir() / "rca.sqlite"


def sample_store() -> Path:
    """The built-in offline sample (``demo``, or the app's first start): ``<data dir>/sample.sqlite``."""
    return data_dir() / "sample.sqlite"


def sample_blocklist() -> Path:
    return data_dir() / "sample-blocklist.csv"


def reports_dir() -> Path:
    """Where reports go without ``--out``: ``$RCA_HOME/reports``, else ``./reports``."""
    home = _data_dir_flag or _home()
    return home / "reports" if home is not None else Path("reports")


def missing_store_hint(path: str | os.PathLike[str]) -> str:
    """What to say when a command that reads finds no store: commands never fall back to the sample."""
    return (f"no store at {path}: run a scan into it, or pass --store PATH (the offline sample: "
            f"`python -m analysis demo`, then --store {sample_store()})")
