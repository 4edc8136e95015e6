"""The store behind one interface: runs, catalog snapshots, targets, probes, findings, overrides and leases.

A SQLite file (WAL; the default, zero setup) or a PostgreSQL database
(``postgresql://user@host/db``), chosen by the location given to :func:`open_store`.
"""

from analysis.store.base import (
    RUN_STATUSES,
    SCHEMA_VERSION,
    SUCCESSFUL,
    Store,
    display_location,
    open_store,
    store_backend,
)
from analysis.store.copy import copy_store
from analysis.store.lease import LEASE_TTL_S, Lease, LeaseKeeper, hold_lease

__all__ = ["Store", "open_store", "display_location", "store_backend", "copy_store", "Lease", "LeaseKeeper",
           "hold_lease", "LEASE_TTL_S", "SCHEMA_VERSION", "RUN_STATUSES", "SUCCESSFUL"]
