"""One scan at a time per scope: the lease on both backends, with an injected clock (no test sleeps)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from analysis.errors import EXIT_RUN_LEVEL, LeaseLostError, ScopeBusyError
from analysis.store import hold_lease, open_store
from analysis.store.lease import normalise_scope, scopes_overlap

from .helpers import PROJECT_ROOT
from .pg_cluster import BACKENDS, PASSWORD, PASSWORD_ROLE, store_location

T0 = datetime(2026, 3, 2, 10, 2, tzinfo=timezone.utc)


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=BACKENDS)
def location(request, tmp_path) -> str:
    return store_location(request, tmp_path)


@pytest.fixture
def two(location):
    """Two connections to one store (two scans), each with its own injected clock."""
    with open_store(location) as a, open_store(location) as b:
        a.clock, b.clock = Clock(), Clock()
        yield a, b


@pytest.mark.parametrize("a, b, overlap", [
    ("together", "together", True),
    ("together", "novita", False),
    ("together,novita", "novita", True),
    ("a,b", "c,d", False),
    ("all", "novita", True),
    ("all", "all", True),
    ("all,-novita", "novita", False),
    ("all,-novita", "novita,together", True),
    ("all,-novita", "all,-together", True),
    ("", "together", True),  # an empty spec is every provider
])
def test_scopes_overlap(a, b, overlap):
    assert scopes_overlap(a, b) is overlap and scopes_overlap(b, a) is overlap


def test_scopes_are_normalised():
    assert normalise_scope("novita, together") == normalise_scope("together,novita") == "novita,together"
    assert normalise_scope("") == normalise_scope("all") == "all"
    assert normalise_scope("all,-x") == "all,-x"


def test_overlapping_scopes_conflict_and_name_the_holder(two):
    a, b = two
    held = a.acquire_lease("hub", "together")
    with pytest.raises(ScopeBusyError) as caught:
        b.acquire_lease("hub", "novita,together")
    busy = caught.value
    assert busy.exit_code == EXIT_RUN_LEVEL
    assert (busy.pid, busy.host, busy.started_at, busy.providers, busy.source) == (
        held.pid, held.host, "2026-03-02T10:02:00.000Z", "together", "hub")
    since = T0.astimezone().strftime("%H:%M")
    assert str(busy).startswith(f"a scan of together (hub) is running since {since} (pid {held.pid}, host {held.host}")
    with pytest.raises(ScopeBusyError):
        b.acquire_lease("hub", "all")
    with pytest.raises(ScopeBusyError):  # the same process cannot take an overlapping scope twice either
        a.acquire_lease("hub", "together")


def test_disjoint_scopes_and_other_sources_run_side_by_side(two):
    a, b = two
    a.acquire_lease("hub", "together")
    b.acquire_lease("hub", "novita")
    b.acquire_lease("router", "together")
    b.acquire_lease("hub", "all,-together,-novita")
    assert sorted((lease.source, lease.providers) for lease in a.leases()) == [
        ("hub", "all,-novita,-together"), ("hub", "novita"), ("hub", "together"), ("router", "together")]


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it(two):
    a, b = two
    held = a.acquire_lease("hub", "together", ttl_s=60)
    a.clock.advance(30)
    held = a.renew_lease(held, ttl_s=60)  # the heartbeat: now expires at T0 + 90 s
    b.clock.advance(89)
    with pytest.raises(ScopeBusyError):
        b.acquire_lease("hub", "together")
    b.clock.advance(2)  # the holder's heartbeat stopped: 91 s after T0 it is expired
    taken = b.acquire_lease("hub", "together")
    assert taken.id != held.id and [lease.id for lease in b.leases()] == [taken.id]
    with pytest.raises(LeaseLostError):
        a.renew_lease(held)
    assert not a.release_lease(held)  # releasing a lost lease frees nothing of the new holder's
    with pytest.raises(ScopeBusyError):
        a.acquire_lease("hub", "together")  # a's clock says b's lease is fresh


def test_a_released_lease_frees_the_scope(two):
    a, b = two
    held = a.acquire_lease("hub", "all")
    assert a.release_lease(held)
    assert b.acquire_lease("hub", "together").providers == "together"


def test_waiting_for_a_scope_uses_the_store_clock(two):
    a, b = two
    held = a.acquire_lease("hub", "together")
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # time passes, and the first scan finishes meanwhile
        slept.append(seconds)
        b.clock.advance(seconds)
        if len(slept) == 3:
            a.release_lease(held)

    lease = b.acquire_lease("hub", "together", wait_s=30, poll_s=2, sleep=sleep)
    assert lease.providers == "together" and slept == [2, 2, 2]

    slept.clear()
    with pytest.raises(ScopeBusyError):
        a.acquire_lease("hub", "together", wait_s=5, poll_s=2, sleep=lambda s: (slept.append(s), a.clock.advance(s)))
    assert slept == [2, 2, 1]


def test_the_lease_of_a_run(two):
    a, b = two
    held = a.acquire_lease("hub", "together")
    assert b.lease_of_run(7) is None
    a.set_lease_run(held, 7)
    found = b.lease_of_run(7)
    assert found is not None and found.id == held.id and found.pid == held.pid
    a.release_lease(held)
    assert b.lease_of_run(7) is None


def test_only_one_of_many_concurrent_takers_wins(location):
    """Eight connections race for one scope: the store's write lock lets exactly one in."""
    open_store(location).close()
    start = threading.Barrier(8)
    results: list[str] = []

    def take() -> None:
        with open_store(location) as store:
            start.wait()
            try:
                store.acquire_lease("hub", "together")
                results.append("won")
            except ScopeBusyError:
                results.append("busy")

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == ["busy"] * 7 + ["won"]


_HOLDER = textwrap.dedent("""
    import sys
    from analysis.store import open_store

    store = open_store(sys.argv[1])
    store.acquire_lease("hub", "together")
    print("held", flush=True)
    sys.stdin.read()
""")


def test_a_killed_holder_on_this_host_frees_the_scope_at_once(location):
    """No need to wait out the TTL when the holder process on this host is gone."""
    open_store(location).close()
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, location], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    try:
        assert proc.stdout.readline().strip() == "held", proc.stderr.read()
        with open_store(location) as store:
            with pytest.raises(ScopeBusyError, match=f"pid {proc.pid}"):
                store.acquire_lease("hub", "together")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    with open_store(location) as store:
        assert store.acquire_lease("hub", "together").pid != proc.pid


def test_hold_lease_beats_and_releases(location):
    open_store(location).close()
    with hold_lease(location, "hub", "together", ttl_s=1.0) as keeper:  # a beat every 250 ms
        keeper.set_run(3)
        deadline = time.monotonic() + 20
        while keeper.renewals < 2 and time.monotonic() < deadline:  # polling a real condition, with a deadline
            time.sleep(0.01)
        assert keeper.renewals >= 2 and not keeper.lost
        assert keeper.lease.expires_at > keeper.lease.started_at
        keeper.check()
        with open_store(location) as other:
            holder = other.lease_of_run(3)
            assert holder is not None and holder.id == keeper.lease.id
    with open_store(location) as other:
        assert other.leases() == [] and other.acquire_lease("hub", "together")


def test_hold_lease_refuses_a_busy_scope_and_reports_a_takeover(location):
    with open_store(location) as first:
        held = first.acquire_lease("hub", "all")
        with pytest.raises(ScopeBusyError):
            with hold_lease(location, "hub", "together"):
                pytest.fail("the block must not run")
        first.release_lease(held)
    with hold_lease(location, "hub", "together") as keeper:
        with open_store(location) as thief:  # another scan sees the lease expired (its clock is later)
            thief.clock = Clock(datetime.now(timezone.utc) + timedelta(hours=1))
            thief.acquire_lease("hub", "together")
        assert not keeper.renew() and keeper.lost
        with pytest.raises(LeaseLostError):
            keeper.check()


def test_busy_message_has_no_password(postgres_server):
    url = postgres_server.new_database(owner=PASSWORD_ROLE).replace(f"{PASSWORD_ROLE}@",
                                                                    f"{PASSWORD_ROLE}:{PASSWORD}@")
    with open_store(url) as a, open_store(url) as b:
        a.acquire_lease("hub", "together")
        with pytest.raises(ScopeBusyError) as caught:
            b.acquire_lease("hub", "together")
    assert PASSWORD not in str(caught.value) and f"{PASSWORD_ROLE}@127.0.0.1" in str(caught.value)
