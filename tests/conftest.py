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

    def start(scenario: Scenario | dict, ssl_context=None) -> SimulatorServer:  # noqa: ANN001 - an SSLContext
        if isinstance(scenario, dict):
            scenario = Scenario.from_dict(scenario)
        server = SimulatorServer(scenario, ssl_context=ssl_context).start()
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
def demo_output(request, tmp_path_factory, cli_home) -> helpers.CliResult:
    """``python -m analysis demo --out-dir DIR`` run once per test run, in process: its files are the session's
    sample store.  The xdist workers of a run share one build (the first takes a file lock and runs the demo,
    the others wait and read what it wrote); the demo writes the store to a temp file and moves it into place.
    """
    import fcntl
    import json

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if hasattr(request.config, "workerinput") else base) / "sample-shared"
    folder.mkdir(exist_ok=True)
    record = folder / "demo-output.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.exists():
            result = helpers.run_cli("demo", "--out-dir", str(folder))
            record.write_text(json.dumps(result.__dict__))
    return helpers.CliResult(**json.loads(record.read_text()))


@pytest.fixture(scope="session")
def sample_store(demo_output, tmp_path_factory, request) -> Path:
    """The built-in sample (simulator scans with history), built by ``demo`` once per test run.

    Read-only for tests: copy it (``shutil.copy``) before writing to it.
    """
    assert demo_output.returncode == 0, demo_output.stderr
    base = tmp_path_factory.getbasetemp()
    return (base.parent if hasattr(request.config, "workerinput") else base) / "sample-shared" / "sample.sqlite"


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


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (work stealing hands each worker one contiguous block of the collection, and steals from
    the ends of queues), start each worker's block with its share of the slow tests: the browser tests and the
    other long ones then run side by side from the start instead of queueing on one worker at the end."""
    import itertools
    import math

    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    slow = [item for item in items if item.get_closest_marker("slow")]
    if workers < 2 or not slow:
        return
    rest = iter([item for item in items if not item.get_closest_marker("slow")])
    blocks: list[list] = [slow[k::workers] for k in range(workers)]
    size = math.ceil(len(items) / workers)
    ordered = []
    for block in blocks:
        ordered += block + list(itertools.islice(rest, max(0, size - len(block))))
    items[:] = ordered + list(rest)
