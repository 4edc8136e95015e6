"""Shared fixtures: a real simulator server on a free port, temp stores, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from analysis.pipeline.scan import ScanConfig
from analysis.devtools.simulator import Scenario, SimulatorServer, default_scenario

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A recognisable fake token: tests search every output for it.
SECRET_TOKEN = "rca-test-secret-not-a-real-token-0123456789"


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


def sim_stats(server: SimulatorServer) -> dict:
    return httpx.get(f"{server.url}/_sim/stats").json()


def reset_stats(server: SimulatorServer) -> None:
    httpx.post(f"{server.url}/_sim/reset")


def fast_config(server: SimulatorServer, **overrides) -> ScanConfig:
    """Scan settings that keep tests quick: short timeouts and backoff."""
    values = dict(hub_url=server.url, router_url=server.router_url, provider="hf-inference", concurrency=8,
                  timeout=1.0, retries=2, backoff=0.01, retry_after_cap=0.5)
    values.update(overrides)
    return ScanConfig(**values)


FAST_FLAGS = ["--timeout", "1", "--backoff", "0.01", "--retry-after-cap", "0.5"]


_CLI_HOME: list[Path] = []  # set by the session fixture below: where a CLI run's default paths land


@pytest.fixture(scope="session", autouse=True)
def cli_home(tmp_path_factory) -> Path:
    """A temp folder that is the working directory and ``RCA_HOME`` of every ``run_cli``: a command's default
    paths (``data/``, ``reports/``) never land in the checkout."""
    folder = tmp_path_factory.mktemp("cli-home")
    _CLI_HOME[:] = [folder]
    return folder


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m analysis`` as a real subprocess, in the session's CLI home unless ``cwd`` is given."""
    full_env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    full_env["RCA_HOME"] = str(_CLI_HOME[0])
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or _CLI_HOME[0], timeout=timeout)


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory) -> Path:
    """The built-in sample (simulator scans with history), built once per session in a temp dir.

    Read-only for tests: copy it (``shutil.copy``) before writing to it.
    """
    from analysis.devtools.sample import build_sample_store

    folder = tmp_path_factory.mktemp("sample")
    result = build_sample_store(folder / "sample.sqlite", folder / "sample-blocklist.csv")
    return result.store_path
