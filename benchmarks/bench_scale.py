"""Probing at real scale: a rate-limited upstream, two providers with different limits, a heavy latency tail.

Each scenario runs :func:`analysis.pipeline.probe.probe_targets` in this process
against the simulator in its own process (``python -m analysis simulate
--scenario ...``), with the probe layer's defaults (rate control on, retries 2,
backoff 1 s) unless the scenario says otherwise:

- ``rate-limited``: 600 targets at 50 ms behind 20 requests/s that answers 429
  without ``Retry-After`` above it (a token bucket of one second); concurrency 64.
  Against the rate bound (600 / 20 = 30 s): the wall time, the share of requests
  answered 429 and the models ending ``rate_limited`` (a final 429).
- ``two providers``: ``limited`` at 5 requests/s (50 targets) and ``free``
  unlimited (3,000 targets at 50 ms), concurrency 64: the free provider's last
  answer, probed together, against the same targets probed alone (interleaved).
- ``heavy tail``: 2,000 targets, lognormal latency (median 1 s, p99 20 s), 2% of
  the models never answer, ``--timeout 30``, concurrency 64; simulated time scaled
  by ``TAIL_SCALE`` (latencies, timeout and backoff alike).  Against the ideal:
  max(total worker-seconds of the attempts / 64, the longest single chain of one
  target's attempts and waits), both from the run's own attempt log; a first scan
  (no history), then a repeat scan ordered by the first one's verdicts against
  fresh latencies.

Run alone: ``.venv/bin/python benchmarks/bench_scale.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import pandas as pd

from analysis.devtools.simulator import synthetic_scenario
from analysis.pipeline.history import expected_seconds
from analysis.pipeline.probe import ProbeResult, ProbeSettings, probe_targets
from analysis.pipeline.targets import Target

CONCURRENCY = 64
TAIL_SCALE = 0.1  # 1 simulated second = 0.1 s of wall time
TARGETS = {"rate": 1.2, "rate_429_share": 0.05, "two": 1.1, "tail": 1.15}


def _targets(n: int, provider: str) -> list[Target]:
    return [Target(f"bench-org/model-{i:06d}", provider, f"bench-org/model-{i:06d}:{provider}") for i in range(n)]


def _scenario_file(folder: Path, name: str, scenario: Any) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(scenario.to_dict()))
    return str(path)


def _probe(sim: c.Simulator, targets: list[Target], expected_s: dict[str, float] | None = None,
           **settings: Any) -> tuple[float, list[ProbeResult], dict]:
    finished: dict[str, float] = {}
    started = time.perf_counter()

    def seen(result: ProbeResult) -> None:
        finished[result.provider] = time.perf_counter() - started

    results = asyncio.run(probe_targets(targets, ProbeSettings(router_url=sim.router_url, concurrency=CONCURRENCY,
                                                               **settings), seen, expected_s=expected_s))
    return time.perf_counter() - started, results, finished


# --------------------------------------------------------------------------- rate-limited


def rate_limited(folder: Path, quick: bool) -> str:
    n, rps = (200, 20.0) if quick else (600, 20.0)
    scenario = synthetic_scenario(n, 50)
    scenario.router["rate_limits"] = {"hf-inference": rps}
    bound = n / rps
    rows = []
    with c.simulator("--scenario", _scenario_file(folder, "rate", scenario)) as sim:
        runs = []
        for _ in range(1 if quick else 2):
            sim.reset()
            time.sleep(1.0)  # let the bucket refill between runs: each run meets a fresh limit
            wall, results, _ = _probe(sim, _targets(n, "hf-inference"))
            stats = sim.stats()
            refused = sum(stats["rate_limited"].values())
            limited = sum(1 for r in results if r.http_status == 429)
            runs.append((wall, refused, stats["chat_requests"], limited))
            c.log(f"    rate-limited: {wall:.1f} s, {refused}/{stats['chat_requests']} 429s, {limited} rate_limited")
    for i, (wall, refused, sent, limited) in enumerate(runs, 1):
        rows.append([f"run {i}", f"{wall:.1f} s", f"{wall / bound:.2f}x", f"{refused}/{sent} = {refused / sent:.1%}",
                     limited])
    wall = c.median([r[0] for r in runs])
    share = max(r[1] / r[2] for r in runs)
    limited = max(r[3] for r in runs)
    met = wall / bound <= TARGETS["rate"] and share <= TARGETS["rate_429_share"] and limited == 0
    return "\n\n".join([
        "### Rate-limited upstream",
        c.summary(f"Rate-limited {n} targets behind {rps:g} req/s: {wall:.1f} s = {wall / bound:.2f}x the "
                  f"{bound:.0f} s bound, {share:.1%} answered 429, {limited} rate_limited (targets <= "
                  f"{TARGETS['rate']}x, <= 5%, 0: {c.verdict(met)})"),
        f"{n} targets at 50 ms behind {rps:g} requests/s (a token bucket holding one second; 429 without "
        f"`Retry-After` above it), concurrency {CONCURRENCY}, rate control on, retries 2. Bound: {n} / {rps:g} = "
        f"{bound:.0f} s.",
        c.md_table(["run", "wall time", "vs bound", "answered 429", "models ending rate_limited"], rows),
    ])


# --------------------------------------------------------------------------- two providers


def two_providers(folder: Path, quick: bool) -> str:
    n_free, n_limited, rps = (1000, 20, 5.0) if quick else (3000, 50, 5.0)
    scenario = synthetic_scenario(n_free, 50, provider="free")
    for model in scenario.models[:n_limited]:
        model["providers"].append({"provider": "limited", "status": "live", "task": "conversational",
                                   "latency_ms": 50})
    scenario.router["rate_limits"] = {"limited": rps}
    free, limited = _targets(n_free, "free"), _targets(n_limited, "limited")
    with c.simulator("--scenario", _scenario_file(folder, "two", scenario)) as sim:
        def alone() -> dict:
            wall, _, _ = _probe(sim, free)
            return {"s": wall, "cpu_s": 0.0}

        def together() -> dict:
            time.sleep(1.0)  # a refilled bucket for the limited provider
            wall, results, finished = _probe(sim, limited + free)
            return {"s": finished["free"], "cpu_s": 0.0, "wall": wall, "limited_s": finished["limited"],
                    "rate_limited": sum(1 for r in results if r.http_status == 429)}

        runs = c.interleave(sim, {"free alone": alone, "free, with limited": together}, 1 if quick else 3,
                            lambda s: {"chat_requests": s.stats()["chat_requests"]})
    alone_s = c.median([r["s"] for r in runs["free alone"]])
    together_s = c.median([r["s"] for r in runs["free, with limited"]])
    ratio = together_s / alone_s
    met = ratio <= TARGETS["two"]
    rows = [["free provider alone", c.fmt_runs([r["s"] for r in runs["free alone"]]), "1.00x", ""],
            ["free provider, probed with the limited one",
             c.fmt_runs([r["s"] for r in runs["free, with limited"]]), f"{ratio:.2f}x",
             "limited provider's last answer: " + c.fmt_runs([r["limited_s"] for r in runs["free, with limited"]])
             + f" (bound {n_limited / rps:.0f} s); rate_limited: "
             + ", ".join(str(r["rate_limited"]) for r in runs["free, with limited"])]]
    return "\n\n".join([
        "### Two providers, one limited",
        c.summary(f"Two providers: the unlimited one finishes in {together_s:.2f} s next to a 5 req/s one = "
                  f"{ratio:.2f}x its {alone_s:.2f} s alone (target <= {TARGETS['two']}x: {c.verdict(met)})"),
        f"`free`: {n_free} targets at 50 ms, no limit; `limited`: {n_limited} targets at 50 ms behind {rps:g} "
        f"requests/s. Concurrency {CONCURRENCY}. Time of the free provider's last answer, alone and with the "
        "limited one in the same call; interleaved rounds, medians then every run.",
        c.md_table(["what", "free provider's last answer", "vs alone", "note"], rows),
    ])


# --------------------------------------------------------------------------- heavy tail


def _chain_seconds(result: ProbeResult) -> float:
    return sum(a.latency_ms / 1000 + (a.waited_s or 0.0) for a in result.attempt_log)


def _tail_scenario(n: int, latency_seed: int) -> Any:
    scenario = synthetic_scenario(n, 0)
    scenario.router.update(latency_scale=TAIL_SCALE,
                           latency={"dist": "lognormal", "median_ms": 1000, "p99_ms": 20000, "seed": latency_seed},
                           never_answer={"fraction": 0.02, "per": "model", "seed": 7})
    return scenario


def _tail_run(sim: c.Simulator, n: int, history: str, expected: dict[str, float] | None) -> dict:
    sim.reset()
    wall, results, _ = _probe(sim, _targets(n, "hf-inference"), timeout=30 * TAIL_SCALE, backoff=1.0 * TAIL_SCALE,
                              backoff_cap=20 * TAIL_SCALE, expected_s=expected)
    work = sum(a.latency_ms / 1000 for r in results for a in r.attempt_log)
    chain = max(_chain_seconds(r) for r in results)
    ideal = max(work / CONCURRENCY, chain)
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    run = {"history": history, "wall": wall, "work": work, "chain": chain, "ideal": ideal, "outcomes": outcomes,
           "never": sim.stats()["never_answered"], "results": results}
    c.log(f"    heavy tail ({history}): {wall:.1f} s, ideal {ideal:.1f} s (work/64 {work / CONCURRENCY:.1f} s, "
          f"chain {chain:.1f} s) {outcomes}")
    return run


def heavy_tail(folder: Path, quick: bool) -> str:
    n = 500 if quick else 2000
    rounds = 1 if quick else 2
    with c.simulator("--scenario", _scenario_file(folder, "tail", _tail_scenario(n, 7))) as sim:
        first = [_tail_run(sim, n, "none (first scan)", None) for _ in range(rounds)]
    # The scan's own rule (analysis.pipeline.history.expected_seconds) over the first scan's verdicts.
    last = first[0]["results"]
    expected = expected_seconds(pd.DataFrame({"model_string": [r.model_string for r in last],
                                              "latency_ms": [r.latency_ms for r in last],
                                              "attempts": [r.attempts for r in last]}))
    # The next scan draws fresh latencies (another seed): only the models that never answer stay the same.
    with c.simulator("--scenario", _scenario_file(folder, "tail-next", _tail_scenario(n, 8))) as sim:
        repeat = [_tail_run(sim, n, "the first scan's", expected) for _ in range(rounds)]
    runs = first + repeat
    rows = [[f"run {i}", r["history"], f"{r['wall']:.1f} s", f"{r['work'] / CONCURRENCY:.1f} s",
             f"{r['chain']:.1f} s", f"{r['ideal']:.1f} s", f"{r['wall'] / r['ideal']:.2f}x", r["never"],
             r["outcomes"]] for i, r in enumerate(runs, 1)]
    cold = c.median([r["wall"] / r["ideal"] for r in first])
    warm = c.median([r["wall"] / r["ideal"] for r in repeat])
    return "\n\n".join([
        "### Heavy tail",
        c.summary(f"Heavy tail {n} targets (lognormal median 1 s, p99 20 s, 2% never answer, timeout 30 s, "
                  f"time scaled x{TAIL_SCALE:g}): a repeat scan, slowest of the last run first, {warm:.2f}x the ideal "
                  f"(target <= {TARGETS['tail']}x: {c.verdict(warm <= TARGETS['tail'])}); a first scan, with no "
                  f"history, {cold:.2f}x ({c.verdict(cold <= TARGETS['tail'])})"),
        f"{n} targets, latency lognormal (median 1 s, p99 20 s, drawn per model and attempt), 2% of the models "
        f"never answer (every attempt), `--timeout 30`, retries 2, backoff 1 s, concurrency {CONCURRENCY}. "
        f"Simulated time is scaled by {TAIL_SCALE:g} (latencies, timeout, backoff): figures are wall seconds of "
        f"the scaled run. Ideal = max(total worker-seconds of all attempts / {CONCURRENCY}, the longest chain of "
        "one target's attempts and waits), from the run's own attempt log. A first scan has no history; a repeat "
        "scan orders its work by the first scan's verdicts, as `scan` does with the scope's previous successful "
        "run, against a simulator that draws fresh latencies (another seed), so that only the models that never "
        "answer are the same.",
        c.md_table(["run", "history", "wall", "work / 64", "longest chain", "ideal", "vs ideal",
                    "requests never answered", "outcomes"], rows),
        "Without history nothing tells which models will never answer: the model ids state no size and the latency "
        "is drawn independently of the model, so one that never answers and starts late holds the end of the scan "
        f"for its whole chain of three timeouts ({first[0]['chain']:.1f} s here, against an ideal of "
        f"{first[0]['ideal']:.1f} s). With the last run's verdicts the models that timed out start first, and their "
        "chains run beside the rest of the work.",
    ])


def main() -> None:
    args = c.parse_args(__doc__)
    c.log(f"bench_scale: {'quick' if args.quick else 'full'}")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        sections = [rate_limited(folder, args.quick), two_providers(folder, args.quick),
                    heavy_tail(folder, args.quick)]
    print("\n\n".join(["## Probing at scale: rate limits and tails", *sections]))


if __name__ == "__main__":
    main()
