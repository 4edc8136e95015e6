"""Shared fixtures: a real simulator server on a free port, temp stores, the CLI home.  Helpers: helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.devtools.simulator import Scenario, SimulatorServer, default_scenario

from . import helpers


@pytest.fixture(scope="session")
def sim():
    """The default scenario, served for the whole session.  Tests must not change its phase."""
    with SimulatorServer(default_scenario()) as server:
        yield server


@pytest.fixture
def make_sim():
    """Start simulators for custom scenarios; all are stopped after the test."""
    servers: list[SimulatorServer] = []

    def start(scenario: Scenario | dict) -> SimulatorServer:
        if isinstance(scenario, dict):
            scenario = Scenario.from_dict(scenario)
        server = SimulatorServer(scenario).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "rca.sqlite"


@pytest.fixture(scope="session", autouse=True)
def cli_home(tmp_path_factory) -> Path:
    """A temp folder that is the working directory and ``RCA_HOME`` of every CLI run: a command's default
    paths (``rca.sqlite``, ``reports/``) never land in the checkout."""
    folder = tmp_path_factory.mktemp("cli-home")
    helpers.CLI_HOME[:] = [folder]
    return folder


@pytest.fixture(scope="session")
def sample_store(request, tmp_path_factory) -> Path:
    """The built-in sample (simulator scans with history), built once per test run in a temp dir: the xdist
    workers of a run share one build (the first takes a file lock and builds, the others wait and reuse it).

    Read-only for tests: copy it (``shutil.copy``) before writing to it.
    """
    import fcntl

    from analysis.devtools.sample import build_sample_store

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if hasattr(request.config, "workerinput") else base) / "sample-shared"
    folder.mkdir(exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        store = folder / "sample.sqlite"
        if not store.exists():  # built into a temp file and moved into place: never seen half-built
            build_sample_store(store, folder / "sample-blocklist.csv")
    return store


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster for the session (see tests/pg_cluster.py), stopped and removed at the end.

    Skips the tests that use it when no server is installed, unless RCA_REQUIRE_POSTGRES=1 (CI), which fails.
    """
    from .pg_cluster import start_cluster

    cluster = start_cluster()
    if cluster is None:
        pytest.skip("no PostgreSQL server installed (Debian's postgresql; RCA_REQUIRE_POSTGRES=1 makes this fail)")
    try:
        yield cluster
    finally:
        cluster.stop()
