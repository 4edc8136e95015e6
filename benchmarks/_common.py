"""Shared helpers for the benchmark scripts: the simulator subprocess, timing, figures, machine facts.

Every ``bench_*.py`` prints one Markdown section to stdout and its progress to
stderr, so that ``run_all.py`` can collect the sections into ``RESULTS.md``.
Nothing here invents a figure: helpers only measure, summarise and format.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
# The interpreter that runs the benchmarks also runs the scan and the simulator,
# so all of them see the same packages (the project's .venv when run as documented).
PYTHON = sys.executable

_URL_LINE = re.compile(r"on (http://\S+)")


def log(text: str) -> None:
    """Progress goes to stderr: stdout carries only the Markdown section."""
    print(text, file=sys.stderr, flush=True)


def parse_args(doc: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smaller smoke run through the same code paths (figures not for RESULTS.md)")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- simulator subprocess


@dataclass
class Simulator:
    """A ``python -m analysis simulate`` process and the URL it printed."""

    proc: subprocess.Popen[str]
    url: str

    @property
    def router_url(self) -> str:
        return f"{self.url}/v1"

    def reset(self) -> None:
        _request(f"{self.url}/_sim/reset", method="POST")

    def stats(self) -> dict:
        return json.loads(_request(f"{self.url}/_sim/stats"))


def _request(url: str, method: str = "GET") -> bytes:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


@contextmanager
def simulator(*args: str, startup_timeout: float = 120.0) -> Iterator[Simulator]:
    """Run the simulator in its own process (so it never shares a core's GIL with the client).

    Waits for the ``... on http://host:port`` line, and stops the process by its
    PID afterwards.
    """
    cmd = [PYTHON, "-m", "analysis", "simulate", "--port", "0", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _wait_for_url(proc, startup_timeout)
        log(f"  simulator pid {proc.pid} on {url} ({' '.join(args)})")
        yield Simulator(proc, url)
    finally:
        _stop(proc)


def _wait_for_url(proc: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    # readline blocks, but the simulator prints its URL line first and then stays
    # silent; an early exit ends readline with "" and we report stderr.
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"simulator exited with {proc.wait()} before printing its URL: {err.strip()}")
        match = _URL_LINE.search(line)
        if match:
            return match.group(1)
    raise RuntimeError(f"simulator printed no URL within {timeout:g}s")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        # SIGTERM, not SIGINT: a shell's background job starts with SIGINT ignored, and the
        # simulator has nothing to flush.
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def interleave(sim: Simulator, contenders: dict[str, Callable[[], dict]], rounds: int,
               observe: Callable[[Simulator], dict]) -> dict[str, list[dict]]:
    """Run every contender once per round, rotating the order, so noise lands on all of them alike.

    Each contender returns a dict with ``s`` (wall seconds) and ``cpu_s`` (its
    client's CPU seconds); this adds ``sim_cpu_s`` (the simulator's CPU during
    the run) and ``served`` (what ``observe`` reads from the simulator, whose
    counters are reset before each run).
    """
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    order = list(contenders)
    for round_no in range(rounds):
        log(f"  round {round_no + 1}: {' -> '.join(order)}")
        for name in order:
            sim.reset()
            sim_cpu = proc_cpu_seconds(sim.proc.pid)
            result = contenders[name]()
            result["sim_cpu_s"] = proc_cpu_seconds(sim.proc.pid) - sim_cpu
            result["served"] = observe(sim)
            log(f"    {name:14s} {result['s']:6.2f} s  cpu {result['cpu_s']:5.2f} s  "
                f"simulator cpu {result['sim_cpu_s']:5.2f} s  {result['served']}")
            runs[name].append(result)
        order = order[1:] + order[:1]
    return runs


# --------------------------------------------------------------------------- timing and figures


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["s"]`` holds the wall seconds."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat(5) (utime, stime); the split above dropped the first two.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_runs(values: Sequence[float], unit: str = "s", digits: int = 2) -> str:
    """``4.91 s (4.88, 4.91, 5.02)``: the median, then every run in order."""
    each = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"{median(values):.{digits}f} {unit}" + (f" ({each})" if len(values) > 1 else "")


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


SUMMARY_MARK = "<!-- summary: "


def summary(text: str) -> str:
    """A headline for run_all's summary table, as a Markdown comment (invisible where rendered)."""
    return f"{SUMMARY_MARK}{text} -->"


# --------------------------------------------------------------------------- machine facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
                return f"{pretty} ({platform.system()} {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> list[tuple[str, str]]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        ("Date (UTC)", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")),
        ("CPU", _cpu_model()),
        ("Cores", f"{os.cpu_count()} logical, {usable} usable by this process"),
        ("RAM", _ram_gib()),
        ("OS", _os_name()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()} ({PYTHON})"),
        ("Packages", ", ".join(f"{p} {_version(p)}" for p in ("httpx", "httpcore", "pandas", "numpy"))),
    ]
