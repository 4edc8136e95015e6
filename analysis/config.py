"""Paths, in one place: where the app and the reports write when no folder is given.

``RCA_HOME`` moves everything the tool writes by default (reports, the sample)
into one folder: tests point it at their temp dir, so no run writes into the
checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROJECT_ROOT", "DEFAULT_STORE", "NOTEBOOKS", "SAMPLE_STORE", "SAMPLE_BLOCKLIST", "HUB_URL", "ROUTER_URL", "USER_AGENT",
           "home", "reports_dir"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STORE = "data/rca.sqlite"  # relative to the working directory, like every --store
NOTEBOOKS = PROJECT_ROOT / "notebooks"  # the design card keeps them at the top level
# The built-in offline sample (built by `demo`, or by the app's first start).
SAMPLE_STORE = PROJECT_ROOT / "data" / "sample.sqlite"
SAMPLE_BLOCKLIST = PROJECT_ROOT / "data" / "sample-blocklist.csv"
# The real endpoints stay the defaults: a user with a network and a token scans Hugging Face itself.
HUB_URL = "https://huggingface.co"
ROUTER_URL = "https://router.huggingface.co/v1"
USER_AGENT = "catalog-rca/0.1"


def home() -> Path | None:
    """``RCA_HOME`` when set, else ``None`` (the built-in defaults apply)."""
    value = os.environ.get("RCA_HOME", "").strip()
    return Path(value) if value else None


def reports_dir() -> Path:
    """Where the dashboard writes reports: ``$RCA_HOME/reports``, else the project's ``reports/``."""
    base = home()
    return base / "reports" if base is not None else PROJECT_ROOT / "reports"
