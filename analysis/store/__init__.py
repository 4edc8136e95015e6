"""The store behind one interface: runs, catalog snapshots, targets, probes and findings (SQLite, WAL)."""

from analysis.store.sqlite import (
    RUN_STATUSES,
    SCHEMA_VERSION,
    SUCCESSFUL,
    Store,
    open_store,
)

__all__ = ["Store", "open_store", "SCHEMA_VERSION", "RUN_STATUSES", "SUCCESSFUL"]
