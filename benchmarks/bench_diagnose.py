"""Diagnose at scale: 200,000 catalog rows and their probe results through ``analysis.diagnose.diagnose``.

The inputs are synthetic but shaped like the real ones: a catalog frame with
``CATALOG_COLUMNS`` (as ``normalise_hub_models`` builds it) and a probes frame
with the columns ``Store.probes`` returns.  The probe outcomes are a seeded
mixture that reaches every reason a scan can produce (ok, 404s, 400s on non-chat
models, mapping errors, gated, probe errors, 429s, timeouts, 5xx, resets,
invalid bodies, and route checks that turn a refusal into ``route_mismatch``).

Reported: wall time (median of repeats); peak memory as the tracemalloc peak of
one traced call (the target's measure), beside the growth of ru_maxrss over the
untraced calls and the resident size of the inputs; and a plain pandas merge of
the same two frames as a reference for the ratio.

Run alone: ``.venv/bin/python benchmarks/bench_diagnose.py [--quick]``.
"""

from __future__ import annotations

import gc
import os
import random
import resource
import tracemalloc

import _common as c
import pandas as pd

from analysis.pipeline.catalog import CATALOG_COLUMNS
from analysis.pipeline.diagnose import diagnose

TIME_TARGET_S = 2.0
MEMORY_TARGET_BYTES = 1024 ** 3
PROVIDER = "hf-inference"
ROUTER = "http://127.0.0.1:8765/v1/chat/completions"
PROBE_COLUMNS = ["run_id", "kind", "model_id", "provider", "route_for", "model_string", "url", "http_status",
                 "outcome", "error_code", "error_message", "latency_ms", "attempts", "started_at", "finished_at",
                 "note", "attempt_log"]

# (weight, case): what the probe saw and what the catalog says; the reason follows from the taxonomy.
CASES = [
    (62, "ok"), (6, "404"), (6, "400_non_chat"), (5, "400_mapping_error"), (3, "403"), (1, "404_gated"),
    (4, "400_not_supported"), (1, "400_param"), (2, "429"), (3, "timeout"), (2, "502_html"), (2, "500"),
    (2, "reset"), (1, "invalid"),
]
NON_CHAT_TAGS = ["feature-extraction", "summarization", "text-ranking", "sentence-similarity"]


def settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"rows": 20_000, "routes": 100, "repeats": 1}
    return {"rows": 200_000, "routes": 1_000, "repeats": 3}


def _attempt(status: int | None, outcome: str, code: str | None, message: str | None) -> list[dict]:
    return [{"n": 1, "started_at": "2025-07-15T10:00:00.000Z", "latency_ms": 52.0, "http_status": status,
             "outcome": outcome, "error_code": code, "error_message": message, "retry_after": None,
             "waited_s": None}]


def _probe(case: str, model_id: str) -> tuple[int | None, str, str | None, str | None, int]:
    """(http_status, outcome, error_code, error_message, attempts) of one synthetic probe."""
    unsupported = f"The requested model '{model_id}:{PROVIDER}' is not supported by any provider you have enabled."
    return {
        "ok": (200, "chat", None, None, 1),
        "404": (404, "http_error", "model_not_found", f"Model {model_id} does not exist [param=model]", 1),
        "404_gated": (404, "http_error", "model_not_found", f"Model {model_id} does not exist", 1),
        "400_non_chat": (400, "http_error", "model_not_supported", unsupported + " [param=model]", 1),
        "400_mapping_error": (400, "http_error", "model_not_supported", unsupported + " [param=model]", 1),
        "400_not_supported": (400, "http_error", "model_not_supported", unsupported + " [param=model]", 1),
        "400_param": (400, "http_error", "invalid_request_error",
                      "max_tokens is too small for a reasoning model [param=max_tokens]", 1),
        "403": (403, "http_error", "gated_repo", f"Access to model {model_id} is restricted.", 1),
        "429": (429, "http_error", "rate_limit_exceeded", "Rate limit reached", 3),
        "timeout": (None, "timeout", "timeout", "no complete answer within 30s (before any answer)", 3),
        "502_html": (502, "http_error", "html_error_page", "HTML page: 502 Bad Gateway", 3),
        "500": (500, "http_error", "server_error", "Internal server error", 3),
        "reset": (None, "connection", "RemoteProtocolError", "no HTTP answer: Server disconnected", 3),
        "invalid": (200, "invalid", "not_chat_completion", "2xx body is a JSON list, not a chat completion", 1),
    }[case]


def build_inputs(n: int, n_routes: int, seed: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = random.Random(seed)
    weights = [w for w, _ in CASES]
    names = [name for _, name in CASES]
    catalog_rows, probe_rows = [], []
    refused: list[tuple[str, str]] = []
    for i in range(n):
        case = rng.choices(names, weights)[0]
        author = f"org-{i % 997:03d}"
        model_id = f"{author}/model-{i:06d}"
        tag = rng.choice(NON_CHAT_TAGS) if case == "400_non_chat" else (
            None if i % 50 == 0 else ("image-text-to-text" if i % 17 == 0 else "text-generation"))
        status = "error" if case == "400_mapping_error" else ("staging" if i % 211 == 0 else "live")
        task = "feature-extraction" if case == "400_non_chat" and i % 2 else "conversational"
        gated = "manual" if case in ("403", "404_gated") else ("auto" if i % 97 == 0 else "false")
        mapping = {PROVIDER: {"status": status, "task": task, "providerId": model_id.lower()}}
        if i % 3 == 0:
            mapping["together"] = {"status": "live", "task": "conversational", "providerId": model_id}
        catalog_rows.append({
            "model_id": model_id, "author": author, "pipeline_tag": tag,
            "tags": ["transformers", tag or "untagged", "conversational"], "library_name": "transformers",
            "gated": gated, "downloads": rng.randint(0, 5_000_000), "likes": rng.randint(0, 5_000),
            "created_at": "2024-05-15T10:00:00.000Z", "last_modified": "2025-07-01T12:00:00.000Z",
            "mapping": mapping, "mapping_shape": "list", "in_router_list": None if i % 101 == 0 else case == "ok",
            "router_providers": sorted(mapping) if case == "ok" else [],
        })
        http_status, outcome, code, message, attempts = _probe(case, model_id)
        probe_rows.append(_probe_row("primary", model_id, PROVIDER, "", f"{model_id}:{PROVIDER}", http_status,
                                     outcome, code, message, attempts, i))
        if case in ("404", "400_not_supported") and "together" in mapping:
            refused.append((model_id, f"{model_id}:together"))
    for model_id, route in refused[:n_routes]:
        probe_rows.append(_probe_row("route", model_id, "together", PROVIDER, route, 200, "chat", None, None, 1, 0))
    catalog = pd.DataFrame(catalog_rows, columns=CATALOG_COLUMNS)
    catalog["in_router_list"] = catalog["in_router_list"].astype(object)
    return catalog, pd.DataFrame(probe_rows, columns=PROBE_COLUMNS)


def _probe_row(kind: str, model_id: str, provider: str, route_for: str, model_string: str, status: int | None,
               outcome: str, code: str | None, message: str | None, attempts: int, i: int) -> tuple:
    stamp = f"2025-07-15T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z"
    return (1, kind, model_id, provider, route_for, model_string, ROUTER, status, outcome, code, message,
            52.0 + i % 40, attempts, stamp, stamp, "", _attempt(status, outcome, code, message))


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _rss_bytes() -> int:
    """Resident memory now (Linux ``/proc/self/statm``), unlike ru_maxrss which only ever rises."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    args = c.parse_args(__doc__)
    cfg = settings(args.quick)
    n = cfg["rows"]
    c.log(f"bench_diagnose: building {n:,} catalog rows and {n:,} probes (+{cfg['routes']:,} route checks)")
    gc.collect()
    rss_empty = _rss_bytes()
    with c.stopwatch() as build:
        catalog, probes = build_inputs(n, cfg["routes"])
    gc.collect()
    input_bytes = _rss_bytes() - rss_empty
    c.log(f"  built in {build['s']:.1f} s, inputs {input_bytes / 2 ** 20:.0f} MiB resident")

    diag_times, merge_times = [], []
    gc.collect()
    rss_before = _maxrss_bytes()
    findings = None
    for i in range(cfg["repeats"]):
        # Interleaved, so that noise on the machine lands on both alike.
        del findings
        gc.collect()
        with c.stopwatch() as t:
            findings = diagnose(catalog, probes)
        diag_times.append(t["s"])
        gc.collect()
        with c.stopwatch() as t:
            merged = catalog.merge(probes, on="model_id", how="right")
        merge_times.append(t["s"])
        del merged
        c.log(f"  repeat {i + 1}: diagnose {diag_times[-1]:.2f} s, merge {merge_times[-1]:.3f} s")
    rss_growth = _maxrss_bytes() - rss_before

    del findings
    gc.collect()
    tracemalloc.start()
    with c.stopwatch() as traced:
        findings = diagnose(catalog, probes)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    c.log(f"  traced call: {traced['s']:.2f} s, tracemalloc peak {traced_peak / 2 ** 20:.0f} MiB")
    print(report(cfg, catalog, probes, findings, diag_times, merge_times, traced_peak, rss_before, rss_growth,
                 input_bytes, build["s"]))


def report(cfg: dict, catalog: pd.DataFrame, probes: pd.DataFrame, findings: pd.DataFrame, diag_times: list[float],
           merge_times: list[float], traced_peak: int, rss_before: int, rss_growth: int, input_bytes: int,
           build_s: float) -> str:
    n = cfg["rows"]
    med = c.median(diag_times)
    ref = c.median(merge_times)
    mib = 2 ** 20
    time_ok = med < TIME_TARGET_S
    # The target is the diagnosis's own peak; the inputs it is handed are counted beside it.
    memory_ok = traced_peak < MEMORY_TARGET_BYTES
    reasons = findings["reason"].value_counts()
    reason_rows = [[reason, f"{count:,}", f"{count / len(findings) * 100:.1f}%"] for reason, count in reasons.items()]
    rows = [
        ["`diagnose(catalog, probes)`", c.fmt_runs(diag_times), f"{n / med:,.0f} rows/s", f"{med / ref:.1f}x"],
        ["reference: `catalog.merge(probes, on='model_id', how='right')`", c.fmt_runs(merge_times, digits=3),
         f"{n / ref:,.0f} rows/s", "1.0x"],
    ]
    memory_rows = [
        ["tracemalloc peak during one `diagnose` call", f"{traced_peak / mib:,.0f} MiB",
         "Python and NumPy allocations made by the call (inputs excluded: they existed before)"],
        ["ru_maxrss growth over the untraced calls", f"{rss_growth / mib:,.0f} MiB",
         "how far the process's resident high-water mark rose above where the inputs had left it"],
        ["inputs: the two frames handed to `diagnose`", f"{input_bytes / mib:,.0f} MiB",
         f"resident memory added by building them, an upper bound (built in {build_s:.1f} s, not timed)"],
        ["inputs + the call's traced peak", f"{(input_bytes + traced_peak) / mib:,.0f} MiB",
         "what diagnosing this catalog needs in all, beyond the interpreter and pandas"],
        ["process ru_maxrss at the end", f"{(rss_before + rss_growth) / mib:,.0f} MiB",
         "the whole benchmark process's high-water mark, building the synthetic inputs included"],
    ]
    return "\n\n".join([
        "## Diagnose",
        c.summary(f"Diagnose {n:,} rows: {med:.2f} s (target < {TIME_TARGET_S:g} s: {c.verdict(time_ok)}), "
                  f"{med / ref:.1f}x a pandas merge; peak {traced_peak / mib:,.0f} MiB "
                  f"(target < 1 GiB: {c.verdict(memory_ok)}; "
                  f"{(input_bytes + traced_peak) / mib:,.0f} MiB with inputs)"),
        f"{n:,} catalog rows and {n:,} primary probe rows (plus {cfg['routes']:,} route-check rows), synthetic "
        f"with a seeded mixture of outcomes, through `analysis.diagnose.diagnose`; {len(findings):,} findings. "
        f"{cfg['repeats']} repeat(s), interleaved with the reference; medians, then every repeat.",
        c.md_table(["what", "time", "throughput", "vs reference"], rows),
        c.md_table(["memory", "figure", "what it measures"], memory_rows),
        f"**Targets: under {TIME_TARGET_S:g} s: {med:.2f} s, {c.verdict(time_ok)}; under 1 GiB peak: "
        f"{traced_peak / mib:,.0f} MiB at the call's peak, {c.verdict(memory_ok)}** "
        f"({(input_bytes + traced_peak) / mib:,.0f} MiB with its inputs).",
        "Reasons produced (the mixture reaches every branch of the taxonomy a scan can produce):",
        c.md_table(["reason", "findings", "share"], reason_rows),
    ])


if __name__ == "__main__":
    main()
