"""Paths, in one place: where the app and the reports write when no folder is given.

``RCA_HOME`` moves everything the tool writes by default (reports, the sample)
into one folder: tests point it at their temp dir, so no run writes into the
checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROJECT_ROOT", "home", "reports_dir"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path | None:
    """``RCA_HOME`` when set, else ``None`` (the built-in defaults apply)."""
    value = os.environ.get("RCA_HOME", "").strip()
    return Path(value) if value else None


def reports_dir() -> Path:
    """Where the dashboard writes reports: ``$RCA_HOME/reports``, else the project's ``reports/``."""
    base = home()
    return base / "reports" if base is not None else PROJECT_ROOT / "reports"
