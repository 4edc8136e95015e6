"""Catalog pagination: 100,000 models in pages of 1,000 through ``fetch_hub_models`` + ``normalise_hub_models``.

The simulator runs in its own process (``--synthetic 100000 --page-cap 1000``)
and serves the Hub's ``/api/models`` with cursor pagination through ``Link``.
In one run, rounds interleaved:

- ``catalog``: :func:`analysis.catalog.fetch_hub_models` (with the loop check,
  retries and JSON parsing) then :func:`analysis.catalog.normalise_hub_models`,
  each timed;
- ``reference``: one ``httpx.Client`` GETting the same first URL and following
  ``Link`` until it ends, keeping the raw bytes (no parsing, no normalising), so
  the gap is what the package adds to the wire and the server.

Run alone: ``.venv/bin/python benchmarks/bench_catalog.py [--quick]``.
"""

from __future__ import annotations

import time

import _common as c
import httpx

from analysis.pipeline.catalog import CATALOG_COLUMNS, fetch_hub_models, normalise_hub_models

PROVIDER = "hf-inference"
PAGE = 1000


def settings(quick: bool) -> dict[str, int]:
    if quick:
        return {"models": 10_000, "rounds": 1}
    return {"models": 100_000, "rounds": 3}


def run_catalog(sim: c.Simulator, n: int) -> dict:
    pages: list[int] = []
    cpu = time.process_time()
    with c.stopwatch() as fetch:
        entries = fetch_hub_models(sim.url, PROVIDER, limit=PAGE, on_page=lambda p, _models: pages.append(p))
    with c.stopwatch() as norm:
        catalog = normalise_hub_models(entries)
    if len(catalog) != n or list(catalog.columns) != CATALOG_COLUMNS:
        raise RuntimeError(f"catalog has {len(catalog)} rows, expected {n}")
    return {"s": fetch["s"] + norm["s"], "fetch_s": fetch["s"], "normalise_s": norm["s"], "pages": len(pages),
            "cpu_s": time.process_time() - cpu}


def run_reference(sim: c.Simulator, n: int) -> dict:
    """Same request as fetch_hub_models' first page, then every next-page link, bytes only."""
    cpu = time.process_time()
    with httpx.Client(timeout=30) as client, c.stopwatch() as t:
        request = client.build_request("GET", f"{sim.url}/api/models", params=_first_page_params())
        url: str | None = str(request.url)
        pages = size = 0
        while url:
            resp = client.get(url)
            resp.raise_for_status()
            pages += 1
            size += len(resp.content)
            next_link = resp.links.get("next", {}).get("url")
            url = str(resp.url.join(next_link)) if next_link else None
    if pages != -(-n // PAGE):
        raise RuntimeError(f"reference read {pages} pages, expected {-(-n // PAGE)}")
    return {"s": t["s"], "pages": pages, "bytes": size, "cpu_s": time.process_time() - cpu}


def _first_page_params() -> list[tuple[str, str]]:
    # The parameters fetch_hub_models sends, so both sides ask the server for the same pages.
    from analysis.pipeline.catalog import EXPAND_FIELDS

    return [("limit", str(PAGE)), ("inference_provider", PROVIDER)] + [("expand[]", f) for f in EXPAND_FIELDS]


def main() -> None:
    args = c.parse_args(__doc__)
    cfg = settings(args.quick)
    n = cfg["models"]
    c.log(f"bench_catalog: {n:,} models in pages of {PAGE:,}, {cfg['rounds']} rounds")
    with c.simulator("--synthetic", str(n), "--page-cap", str(PAGE)) as sim:
        runs = c.interleave(sim, {"reference": lambda: run_reference(sim, n), "catalog": lambda: run_catalog(sim, n)},
                            cfg["rounds"], lambda s: {"pages": s.stats()["hub_pages_served"]})
    print(report(cfg, runs))


def report(cfg: dict, runs: dict[str, list[dict]]) -> str:
    n = cfg["models"]
    ref = [r["s"] for r in runs["reference"]]
    total = [r["s"] for r in runs["catalog"]]
    fetch = [r["fetch_s"] for r in runs["catalog"]]
    norm = [r["normalise_s"] for r in runs["catalog"]]
    ref_med = c.median(ref)
    cpu = {name: [r["cpu_s"] for r in rs] for name, rs in runs.items()}
    sim_cpu = {name: c.fmt_runs([r["sim_cpu_s"] for r in rs]) for name, rs in runs.items()}
    rows = [
        ["reference: raw `httpx` GETs following `Link`", c.fmt_runs(ref), f"{n / ref_med:,.0f}", "1.00x",
         c.fmt_runs(cpu["reference"]), sim_cpu["reference"]],
        ["`fetch_hub_models`", c.fmt_runs(fetch), f"{n / c.median(fetch):,.0f}", f"{c.median(fetch) / ref_med:.2f}x",
         "", ""],
        ["`normalise_hub_models`", c.fmt_runs(norm), f"{n / c.median(norm):,.0f}", "", "", ""],
        ["**fetch + normalise**", c.fmt_runs(total), f"{n / c.median(total):,.0f}", f"{c.median(total) / ref_med:.2f}x",
         c.fmt_runs(cpu["catalog"]), sim_cpu["catalog"]],
    ]
    client_ratio = c.median(cpu["catalog"]) / c.median(cpu["reference"])
    first = runs["reference"][0]
    served = sorted({r["served"]["pages"] for rs in runs.values() for r in rs})
    return "\n\n".join([
        "## Catalog pagination",
        c.summary(f"Catalog {n:,} models / {first['pages']} pages: fetch + normalise {c.median(total):.2f} s = "
                  f"{c.median(total) / ref_med:.2f}x raw httpx paging ({ref_med:.2f} s); client CPU "
                  f"{client_ratio:.1f}x"),
        f"{n:,} models from the simulator in its own process (`--synthetic {n} --page-cap {PAGE}`): "
        f"{first['pages']} pages of {PAGE:,}, {first['bytes'] / 2 ** 20:.1f} MiB of JSON per pass. "
        f"{cfg['rounds']} round(s), contenders interleaved; medians, then every run in order.",
        c.md_table(["what", "time", "models/s", "vs reference", "client CPU", "simulator CPU"], rows),
        f"**fetch + normalise: {c.median(total):.2f} s for {n:,} models, {c.median(total) / ref_med:.2f}x the "
        f"reference's wall time; {client_ratio:.1f}x its client CPU.** Pages served per pass (`/_sim/stats`): "
        f"{', '.join(str(s) for s in served)}. Client CPU is the benchmark process's own CPU time during the pass; "
        "simulator CPU is the server's, which both contenders pay alike: where it is close to the wall time, "
        "the pass is measuring the simulator's page building rather than the client.",
    ])


if __name__ == "__main__":
    main()
