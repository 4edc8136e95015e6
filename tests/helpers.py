"""Helpers the tests import (fixtures live in conftest.py): scan settings, the CLI runner, simulator stats."""

from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
from click.testing import CliRunner

from analysis import cli
from analysis.devtools.simulator import SimulatorServer
from analysis.pipeline.scan import ScanConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A recognisable fake token: tests search every output for it.
SECRET_TOKEN = "rca-test-secret-not-a-real-token-0123456789"
FAST_FLAGS = ["--timeout", "1", "--backoff", "0.01", "--retry-after-cap", "0.5"]
CLI_HOME: list[Path] = []  # set by conftest's session fixture: where a CLI run's default paths land


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process a test started, if it still runs: terminate, then kill if it will not go."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def csv_rows(text: str) -> list[dict[str, str]]:
    """The rows of an exported CSV: the provenance comment lines (``# ...``) skipped, as a consumer would."""
    import csv

    return list(csv.DictReader(io.StringIO("".join(line for line in text.splitlines(keepends=True)
                                                   if not line.startswith("#")))))


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


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> CliResult:
    """``python -m analysis ARGS`` in this process, through click's ``CliRunner``: the same command group the
    console script runs, with its own environment (no ``HF_TOKEN`` unless given; ``RCA_HOME`` the session's CLI
    home), working directory and captured output.  In process, because ~70 interpreter starts were most of the
    suite's time; the few tests that need a real process (SIGKILL, Ctrl-C, the console script) start one."""
    runner = CliRunner()
    saved_cwd = os.getcwd()
    os.chdir(cwd or CLI_HOME[0])
    try:
        result = runner.invoke(cli.cli, list(args), prog_name="python -m analysis", catch_exceptions=False,
                               env={"HF_TOKEN": None, "RCA_HOME": str(CLI_HOME[0]), **(env or {})})
    finally:
        os.chdir(saved_cwd)
    return CliResult(result.exit_code, result.stdout, result.stderr)
