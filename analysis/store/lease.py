"""One scan at a time per scope: the lease's scopes, its row, and a keeper that holds one while a scan runs.

A lease is keyed by a run's source and provider set.  Two scopes conflict when their
provider sets overlap: ``all`` overlaps every set (``all,-novita`` every set with a
provider other than novita), two lists overlap when they share a name.  The holder
writes a heartbeat; a lease whose heartbeat is older than its TTL, or whose holder
process on this host is gone, is expired and taken over by the next scan.  The store
methods (:meth:`~analysis.store.base.Store.acquire_lease` and friends) do the
atomic part; :func:`hold_lease` keeps the heartbeat going from a thread.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

from analysis.errors import LeaseLostError, StoreError

if TYPE_CHECKING:
    from analysis.store.base import Store

__all__ = ["Lease", "LeaseKeeper", "LEASE_TTL_S", "hold_lease", "normalise_scope", "scopes_overlap",
           "format_since"]

# A holder renews every TTL/4; another host waits at most this long for a killed holder's scope.
LEASE_TTL_S = 60.0


@dataclass(frozen=True)
class Lease:
    """One held lease, as stored."""

    id: int
    source: str
    providers: str  # normalised: "together", "a,b", "all", "all,-novita"
    run_id: int | None
    holder: str  # a random token: only the process that took the lease renews or releases it
    pid: int
    host: str
    started_at: str
    heartbeat_at: str
    expires_at: str

    COLUMNS = ("id", "source", "providers", "run_id", "holder", "pid", "host", "started_at", "heartbeat_at",
               "expires_at")

    @classmethod
    def from_row(cls, row: Any) -> "Lease":
        values = dict(zip(cls.COLUMNS, row))
        return cls(id=int(values["id"]), source=str(values["source"]), providers=str(values["providers"]),
                   run_id=None if values["run_id"] is None else int(values["run_id"]), holder=str(values["holder"]),
                   pid=int(values["pid"]), host=str(values["host"]), started_at=str(values["started_at"]),
                   heartbeat_at=str(values["heartbeat_at"]), expires_at=str(values["expires_at"]))


def _names(spec: str) -> list[str]:
    return [n.strip() for n in spec.split(",") if n.strip()]


def normalise_scope(providers: str) -> str:
    """The stored form of a provider spec (a run's ``provider``, e.g. ``ScanConfig.scope_provider``).

    ``"b, a"`` -> ``"a,b"``; ``""`` or ``"all"`` -> ``"all"``; ``"all,-x"`` -> ``"all,-x"``.
    """
    names = _names(providers)
    if not names or "all" in names:
        excluded = sorted({n for n in names if n.startswith("-") and len(n) > 1})
        return ",".join(["all", *excluded])
    return ",".join(sorted(set(names)))


def _parse(scope: str) -> tuple[bool, frozenset[str]]:
    """(True, excluded) for ``all`` minus some, (False, names) for a list."""
    names = _names(normalise_scope(scope))
    if names[0] == "all":
        return True, frozenset(n[1:] for n in names[1:])
    return False, frozenset(names)


def scopes_overlap(a: str, b: str) -> bool:
    """Whether two provider specs share a provider (``all`` is open-ended, so two ``all`` always do)."""
    a_all, a_names = _parse(a)
    b_all, b_names = _parse(b)
    if a_all and b_all:
        return True
    if a_all:
        return not b_names <= a_names
    if b_all:
        return not a_names <= b_names
    return bool(a_names & b_names)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def format_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_since(started_at: str, now: datetime) -> str:
    """``10:02`` (local time) for a lease taken today, ``2026-01-02 10:02`` before."""
    started = parse_time(started_at).astimezone()
    if started.date() == now.astimezone().date():
        return started.strftime("%H:%M")
    return started.strftime("%Y-%m-%d %H:%M")


class LeaseKeeper:
    """Renews a lease from a daemon thread, on its own store connection, until stopped.

    ``lost`` turns true when a renewal finds the lease gone (taken over after the
    heartbeat stalled for longer than the TTL); :meth:`check` raises then.
    """

    def __init__(self, store: "Store", lease: Lease, ttl_s: float, interval_s: float) -> None:
        self.store = store
        self.lease = lease
        self.ttl_s = ttl_s
        self.interval_s = interval_s
        self.lost = False
        self.renewals = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the connection is the thread's, but set_run comes from the scan's thread
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.id}", daemon=True)

    def start(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.renew():
                return

    def renew(self) -> bool:
        """One heartbeat now; ``False`` once the lease is lost.  A store that fails for a moment is tried again at
        the next beat (the TTL leaves room for three misses)."""
        with self._lock:
            if self.lost:
                return False
            try:
                self.lease = self.store.renew_lease(self.lease, ttl_s=self.ttl_s)
                self.renewals += 1
            except LeaseLostError:
                self.lost = True
                return False
            except StoreError:
                pass
            return True

    def set_run(self, run_id: int) -> None:
        """Attach the run this lease guards (once the scan has created it): the dashboard finds it by run."""
        with self._lock:
            self.lease = self.store.set_lease_run(self.lease, run_id)

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another scan took the scope over."""
        if self.lost:
            raise LeaseLostError(f"the lease of {self.lease.providers} ({self.lease.source}) was taken over by "
                                 "another scan after this one's heartbeat stopped for longer than its TTL")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@contextmanager
def hold_lease(location: str, source: str, providers: str, *, run_id: int | None = None, wait_s: float = 0.0,
               ttl_s: float = LEASE_TTL_S) -> Iterator[LeaseKeeper]:
    """Take the lease of a scope for the duration of a ``with`` block, with a heartbeat every TTL/4.

    Opens its own connection to the store at ``location`` (a heartbeat must never
    land inside the scan's own transactions).  Waits up to ``wait_s`` seconds for a
    busy scope, then raises :class:`~analysis.errors.ScopeBusyError`.  The lease is
    released on the way out, whatever ended the block.
    """
    from analysis.store.base import open_store

    store = open_store(location)
    try:
        lease = store.acquire_lease(source, providers, run_id=run_id, ttl_s=ttl_s, wait_s=wait_s)
        keeper = LeaseKeeper(store, lease, ttl_s, ttl_s / 4).start()
        try:
            yield keeper
        finally:
            keeper.stop()
            try:
                store.release_lease(keeper.lease)
            except StoreError:
                pass  # the TTL frees it: never mask the error that ended the scan
    finally:
        store.close()
