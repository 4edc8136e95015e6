"""store copy: a whole store between backends, ids and id high-water marks kept; never into a non-empty store."""

from __future__ import annotations

import shutil

import pytest

from analysis.errors import EXIT_USAGE, StoreError, StoreNotEmptyError
from analysis.store import copy_store, open_store
from analysis.store.base import DATA_TABLES


def _dump(location: str) -> dict[str, list[tuple]]:
    """Every row of every data table, in a stable order."""
    with open_store(location, readonly=True) as store:
        return {table: sorted((tuple(row) for row in store.db.execute(f"SELECT * FROM {table}").fetchall()), key=repr)
                for table in DATA_TABLES}


def test_sqlite_to_postgres_to_sqlite_round_trip(sample_store, tmp_path, postgres_server):
    source = tmp_path / "sample.sqlite"
    shutil.copy(sample_store, source)
    with open_store(source) as store:  # an override and a pruned id, so that every table and the ids matter
        store.add_override(model_id="m/x", provider="", action="block", reason="r", author="a", expires_at=None)
        store.prune(keep=len(store.runs()) - 1)
    pg, back = postgres_server.new_database(), str(tmp_path / "back.sqlite")

    there = copy_store(str(source), pg)
    again = copy_store(pg, back)

    original = _dump(str(source))
    assert there == again == {table: len(rows) for table, rows in original.items()}
    assert there["runs"] >= 4 and there["probes"] > 0 and there["overrides"] == 1
    assert _dump(pg) == original
    assert _dump(back) == original
    for location in (pg, back):  # a copied store goes on numbering where the source would have
        with open_store(location) as store:
            next_id = store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
        with open_store(source) as store:
            assert next_id == store.id_high_water("runs") + 1


def test_a_non_empty_target_is_refused_and_left_as_it_is(tmp_path, postgres_server):
    source = tmp_path / "a.sqlite"
    with open_store(source) as store:
        store.create_run(source="hub", provider="p", hub_url=None, router_url=None, settings={})
    for target in (str(tmp_path / "b.sqlite"), postgres_server.new_database()):
        with open_store(target) as store:
            store.add_override(model_id="m", provider="", action="allow", reason="r", author="a", expires_at=None)
        before = _dump(target)
        with pytest.raises(StoreNotEmptyError, match="never merges") as caught:
            copy_store(str(source), target)
        assert caught.value.exit_code == EXIT_USAGE
        assert _dump(target) == before


def test_a_copy_needs_a_source_and_two_stores(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        copy_store(str(tmp_path / "absent.sqlite"), str(tmp_path / "new.sqlite"))
    assert not (tmp_path / "new.sqlite").exists()
    source = tmp_path / "a.sqlite"
    open_store(source).close()
    with pytest.raises(StoreError, match="same store"):
        copy_store(str(source), str(source))
