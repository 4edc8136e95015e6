"""``store copy``: move a whole store between backends (SQLite <-> PostgreSQL), ids preserved."""

from __future__ import annotations

import os

from analysis.errors import StoreError, StoreNotEmptyError
from analysis.store.base import DATA_TABLES, insert_sql, open_store

__all__ = ["copy_store", "CopyReport"]

CopyReport = dict[str, int]


def copy_store(src_location: str | os.PathLike[str], dst_location: str | os.PathLike[str]) -> CopyReport:
    """Copy every run, catalog snapshot, target, probe, finding and override from ``src`` into ``dst``.

    The source is opened read-only; the target is created (and migrated) if needed and
    must hold no row: a copy never merges (:class:`StoreNotEmptyError`, exit 2,
    nothing written).  Ids are kept, and so is each id sequence's high-water mark, so
    that run 7 is run 7 in both stores and a pruned id is never handed out again.
    Leases are not copied: they belong to processes running against the source.  One
    transaction on the target: a failed copy leaves it empty.  Returns rows per table.
    """
    if os.fspath(src_location) == os.fspath(dst_location):
        raise StoreError("store copy: --from and --to are the same store")
    with open_store(src_location, readonly=True) as src, open_store(dst_location) as dst:
        if src.schema_version() != dst.schema_version():  # both are this tool's current version once open
            raise StoreError(f"store copy: {src.display} has schema version {src.schema_version()}, "
                             f"{dst.display} {dst.schema_version()}")
        if not dst.is_empty():
            raise StoreNotEmptyError(f"store copy: {dst.display} already holds runs or overrides; a copy never "
                                     "merges: copy into a new store (or an empty database)")
        copied: CopyReport = {}
        run_ids = [int(row[0]) for row in src.db.execute("SELECT id FROM runs ORDER BY id").fetchall()]
        with dst.transaction() as db:
            for table in DATA_TABLES:
                columns = [c for c in src.table_columns(table) if c in set(dst.table_columns(table))]
                select = f"SELECT {', '.join(columns)} FROM {table}"
                insert = insert_sql(table, columns)
                copied[table] = 0
                # Per run, so that memory holds one run's probes at a time, not the whole store's.
                batches = [(select + " WHERE run_id = ?", (run_id,)) for run_id in run_ids] \
                    if "run_id" in columns else [(select, ())]
                for sql, params in batches:
                    rows = [tuple(row) for row in src.db.execute(sql, params).fetchall()]
                    if rows:
                        db.executemany(insert, rows)
                        copied[table] += len(rows)
            for table in ("runs", "overrides"):
                dst.set_id_high_water(db, table, src.id_high_water(table))
        return copied
