"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/RESULTS.md``.

Each bench script runs in its own subprocess (a fresh interpreter, so one
bench's memory high-water mark or imports never colour another's) and prints
one Markdown section to stdout; its progress on stderr is passed through.  The
sections are collected under the machine's facts and the date.

    .venv/bin/python benchmarks/run_all.py            # full size -> benchmarks/RESULTS.md
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run -> benchmarks/out/RESULTS-quick.md
    .venv/bin/python benchmarks/run_all.py --only probe,diagnose

``--quick`` runs the same code paths on smaller inputs and never overwrites
RESULTS.md, which holds the full-size figures.  The exit code is 1 when any
bench failed; its section then says so, with the end of its stderr.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import _common as c

# The headline benches first; any other bench_*.py follows in name order.
PREFERRED = ["bench_probe.py", "bench_diagnose.py", "bench_catalog.py", "bench_dashboard.py"]
TIMEOUT_S = 540


def discover(only: list[str] | None) -> list[Path]:
    found = {p.name: p for p in sorted(c.BENCH_DIR.glob("bench_*.py"))}
    ordered = [found[name] for name in PREFERRED if name in found]
    ordered += [p for name, p in found.items() if name not in PREFERRED]
    if only:
        ordered = [p for p in ordered if any(word in p.stem for word in only)]
    return ordered


def run_one(script: Path, quick: bool) -> dict:
    """Run one bench; stream its stderr through while keeping the tail for a failure report."""
    cmd = [c.PYTHON, str(script)] + (["--quick"] if quick else [])
    c.log(f"== {script.name}")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=c.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tail: collections.deque[str] = collections.deque(maxlen=25)
    out: list[str] = []
    # stdout is drained on a thread so that neither pipe can fill up and stall the bench.
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        sys.stderr.write(line)
        tail.append(line.rstrip("\n"))
    try:
        code = proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
        tail.append(f"(killed after {TIMEOUT_S} s)")
    reader.join()
    return {"script": script, "code": code, "seconds": time.perf_counter() - started,
            "markdown": "".join(out).strip(), "tail": list(tail)}


def section(result: dict) -> str:
    if result["code"] == 0 and result["markdown"]:
        return result["markdown"]
    tail = "\n".join(result["tail"]) or "(no output)"
    return (f"## {result['script'].name}: FAILED (exit {result['code']})\n\n"
            f"No figures from this bench in this run. The end of its stderr:\n\n```\n{tail}\n```")


def summaries(results: list[dict]) -> list[str]:
    lines = []
    for result in results:
        found = [line.strip()[len(c.SUMMARY_MARK):-3].strip() for line in result["markdown"].splitlines()
                 if line.strip().startswith(c.SUMMARY_MARK)]
        if result["code"] != 0:
            found = [f"{result['script'].name} failed (exit {result['code']})"]
        lines += [f"- {text}" for text in found]
    return lines


def render(results: list[dict], quick: bool, total_s: float, load: tuple[str, str]) -> str:
    command = "benchmarks/run_all.py" + (" --quick" if quick else "")
    # The load average says how busy the shared machine was: other work competes for its cores.
    load_row = ("Load average (1, 5, 15 min)", f"{load[0]} at start, {load[1]} at end")
    facts = c.md_table(["", ""], [*c.machine_facts(), load_row])
    timing = c.md_table(["bench", "exit", "wall time"],
                        [[f"`{r['script'].name}`", r["code"], f"{r['seconds']:.0f} s"] for r in results])
    parts = [
        "# Benchmark results" + (" (quick smoke run: not the reference figures)" if quick else ""),
        f"Written by `.venv/bin/python {command}` in {total_s:.0f} s. Every figure below comes from that one run; "
        "each bench ran in its own process, and every ratio compares two things measured in the same bench, "
        "interleaved, so that the shared machine's noise lands on both.",
        facts,
    ]
    headline = summaries(results)
    if headline:
        parts += ["## Summary", "\n".join(headline)]
    parts += [timing, *(section(r) for r in results)]
    return "\n\n".join(parts) + "\n"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs, same code paths; never writes RESULTS.md")
    parser.add_argument("--only", help="comma list of words; run the benches whose names contain one of them")
    parser.add_argument("--out", type=Path, help="where to write (default: RESULTS.md, or out/RESULTS-quick.md)")
    args = parser.parse_args()
    out = args.out or (c.BENCH_DIR / "out" / "RESULTS-quick.md" if args.quick else c.BENCH_DIR / "RESULTS.md")
    scripts = discover([w.strip() for w in args.only.split(",")] if args.only else None)
    if not scripts:
        parser.error("no bench script matched")
    started = time.perf_counter()
    load_start = _load()
    results = [run_one(script, args.quick) for script in scripts]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results, args.quick, time.perf_counter() - started, (load_start, _load())),
                   encoding="utf-8")
    c.log(f"wrote {out}")
    return 1 if any(r["code"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
