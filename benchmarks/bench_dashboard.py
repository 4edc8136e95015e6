"""Dashboard at scale: a 20,000-model store, the overview's first render and a filter change, through AppTest.

The store is written straight through the ``Store`` API (no probing): three
successful runs of a synthetic catalog of 20,000 models with a seeded mixture
of reasons, pipeline tags and mapping states, so the overview has a trend and
the models page has something to filter.

Reported (medians of repeats, each run listed):

- the overview's first render: a fresh ``AppTest`` session with every
  ``st.cache_data`` cache cleared, so the run list, the run and the charts are
  loaded and built from the store;
- a filter change on the models page: one reason chosen in the reason filter
  of a session that already shows the page (caches warm, as for a user).

Run alone: ``.venv/bin/python benchmarks/bench_dashboard.py [--quick]``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import _common as c
import pandas as pd
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.pipeline.catalog import CATALOG_COLUMNS
from analysis.schema import FINDING_COLUMNS
from analysis.store import open_store
from analysis.taxonomy import BLOCKING, reason_info

MODELS = 20_000
QUICK_MODELS = 2_000
RUNS = 3
REPEATS = 5
OVERVIEW_TARGET_S = 3.0
FILTER_TARGET_S = 1.0
APP = c.ROOT / "app.py"
# (weight, reason, http status): roughly a real catalog, where most models answer.
MIX = [(80, "ok", 200), (5, "provider_mapping_error", 400), (3, "non_chat_task", 400), (2, "not_found", 404),
       (2, "not_supported", 400), (1, "gated", 403), (2, "timeout", None), (2, "upstream_error", 500),
       (1, "rate_limited", 429), (1, "route_mismatch", 400), (1, "invalid_response", 200)]
TAGS = ["text-generation", "text-generation", "text-generation", "image-text-to-text", "feature-extraction",
        "text-classification", None]


def _catalog(n: int) -> pd.DataFrame:
    rows = []
    for i in range(n):
        model_id = f"org-{i % 700:03d}/model-{i:06d}"
        status = "error" if i % 23 == 0 else "live"
        rows.append({"model_id": model_id, "author": model_id.split("/")[0], "pipeline_tag": TAGS[i % len(TAGS)],
                     "tags": ["transformers", "conversational"], "library_name": "transformers", "gated": "false",
                     "downloads": n - i, "likes": i % 100, "created_at": "2025-01-01T00:00:00.000Z",
                     "last_modified": "2025-06-01T00:00:00.000Z",
                     "mapping": {"hf-inference": {"status": status, "task": "conversational", "providerId": model_id}},
                     "mapping_shape": "list", "in_router_list": status == "live", "router_providers": ["hf-inference"]})
    return pd.DataFrame(rows, columns=CATALOG_COLUMNS)


def _findings(catalog: pd.DataFrame, rng: random.Random) -> pd.DataFrame:
    weights = [w for w, _, _ in MIX]
    rows = []
    for cat in catalog.to_dict("records"):
        _, reason, status = rng.choices(MIX, weights)[0]
        model_id = cat["model_id"]
        rows.append({
            "model_id": model_id, "provider": "hf-inference", "reason": reason, "blocked": reason in BLOCKING,
            "http_status": status, "pipeline_tag": cat["pipeline_tag"],
            "detail": f"router {status or 'no answer'} ({reason}); pipeline_tag={cat['pipeline_tag']}",
            "message": reason_info(reason).message.format(model=model_id),
            "latency_ms": round(rng.uniform(20, 900), 1) if reason == "ok" else None, "attempts": 1,
            "checked_at": "2025-07-15T12:00:00.000Z", "model_string": f"{model_id}:hf-inference",
            "action": reason_info(reason).action, "predicted": False, "error_code": None, "note": "",
            "mapping_status": cat["mapping"]["hf-inference"]["status"], "mapping_task": "conversational",
            "in_router_list": cat["in_router_list"], "gated": "false", "working_route": None,
            "alternatives": []})
    return pd.DataFrame(rows, columns=FINDING_COLUMNS + ["alternatives"])


def build_store(path: Path, n: int) -> None:
    """``RUNS`` successful runs over the same ``n``-model catalog, with the reasons drawn anew each run."""
    rng = random.Random(20_000)
    catalog = _catalog(n)
    with open_store(path) as store:
        for _ in range(RUNS):
            run_id = store.create_run(source="hub", provider="hf-inference", hub_url="http://127.0.0.1:8765",
                                      router_url="http://127.0.0.1:8765/v1", settings={"max_tokens": 16})
            store.save_catalog(run_id, catalog)
            findings = _findings(catalog, rng)
            store.save_findings(run_id, findings)
            counts = {str(k): int(v) for k, v in findings["reason"].value_counts().items()}
            store.finish_run(run_id, "ok", counts=counts, n_targets=n, n_probed=n, n_ok=counts.get("ok", 0),
                             n_blocked=int(findings["blocked"].sum()), n_transient=0)


def _app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=120)


def _check(at: AppTest) -> AppTest:
    if at.exception or at.error:
        raise RuntimeError(f"the app failed: {[e.value for e in (*at.exception, *at.error)]}")
    return at


def time_overview(repeats: int) -> list[float]:
    """Seconds of a first render of the overview, caches cleared each time."""
    times = []
    for _ in range(repeats):
        st.cache_data.clear()
        at = _app()
        with c.stopwatch() as t:
            at.run()
        _check(at)
        if len(at.get("plotly_chart")) != 4:
            raise RuntimeError("the overview did not draw its four charts")
        times.append(t["s"])
    return times


def time_filter(repeats: int, choices: tuple[list[str], list[str]]) -> tuple[list[float], list[int]]:
    """Seconds of a reason-filter change on a models page already shown, and the rows each change left.

    The filter alternates between the two ``choices``, so every run is a change.
    """
    at = _check(_app().run())
    _check(at.switch_page("app_pages/models.py").run())
    times, rows = [], []
    for i in range(repeats):
        with c.stopwatch() as t:
            at.multiselect(key="models_reasons").set_value(choices[i % 2]).run()
        _check(at)
        times.append(t["s"])
        rows.append(len(next(df for df in at.dataframe if df.key and df.key.startswith("models_table_")).value))
    return times, rows


def main() -> None:
    args = c.parse_args(__doc__)
    n = QUICK_MODELS if args.quick else MODELS
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        store = Path(tmp) / "rca.sqlite"
        c.log(f"dashboard: writing {RUNS} runs of {n:,} models")
        with c.stopwatch() as built:
            build_store(store, n)
        os.environ["RCA_STORE"] = str(store)
        os.environ.pop("HF_TOKEN", None)
        c.log("dashboard: warm-up render (imports)")
        with c.stopwatch() as warm:
            _check(_app().run())
        c.log("dashboard: overview first renders")
        overview = time_overview(REPEATS)
        c.log("dashboard: models filter changes")
        narrow, narrow_rows = time_filter(REPEATS, (["not_found"], ["timeout"]))
        broad, broad_rows = time_filter(REPEATS, (["ok"], ["ok", "timeout"]))
    print("## Dashboard\n")
    print(f"Store: {RUNS} runs of {n:,} models written through the Store API in {built['s']:.1f} s"
          f"{' (--quick: not the target size)' if args.quick else ''}. Measured through Streamlit's AppTest "
          f"(`{APP.name}`), median of {REPEATS} runs, every run listed.\n")
    print(c.md_table(["measure", "time", "target", "result"], [
        ["overview first render (caches cleared)", c.fmt_runs(overview), f"< {OVERVIEW_TARGET_S:g} s",
         c.verdict(c.median(overview) < OVERVIEW_TARGET_S)],
        [f"models page: change the reason filter (~{c.median(narrow_rows):,.0f} rows left)", c.fmt_runs(narrow),
         f"< {FILTER_TARGET_S:g} s", c.verdict(c.median(narrow) < FILTER_TARGET_S)],
        [f"models page: change the reason filter (~{c.median(broad_rows):,.0f} rows left)", c.fmt_runs(broad),
         f"< {FILTER_TARGET_S:g} s", c.verdict(c.median(broad) < FILTER_TARGET_S)],
        ["first render in a fresh process (imports included)", f"{warm['s']:.2f} s", "-", "-"],
    ]))
    print()


if __name__ == "__main__":
    main()
