"""Blocklist page: choose the blocking reasons, preview, download (byte for byte the CLI's export), see changes."""

from __future__ import annotations

import shlex
from datetime import datetime, timezone

import streamlit as st

from analysis.outputs import dashboard
from analysis.outputs.export import Provenance, blocklist_bytes, blocklist_frame, routes_bytes, routes_frame
from analysis.outputs.overrides import apply_overrides
from analysis.schema import BLOCKLIST_COLUMNS
from analysis.store import SUCCESSFUL, display_location
from analysis.taxonomy import REASON_NAMES, RUN_LEVEL
from app_pages import shared

# format -> (button label, file suffix, MIME type)
FORMATS = {"csv": ("CSV", "csv", "text/csv"), "json": ("JSON", "json", "application/json"),
           "python": ("Python set", "py", "text/x-python")}
CHOICES = [r for r in REASON_NAMES if r not in RUN_LEVEL and r != "ok"]


def _cli_line(store_path: str, run_id: int, reasons: set[str] | None) -> str:
    words = ["python", "-m", "analysis", "export", "blocklist", "--store", display_location(store_path), "--run",
             str(run_id),
             "--format", "csv"]
    if reasons is not None:
        words += ["--reasons", ",".join(r for r in REASON_NAMES if r in reasons)]
    return shlex.join(words)


ctx = shared.require_run()
overrides = shared.load_overrides(ctx.store_path, ctx.version)
# The operators' overrides apply here exactly as in `export`, so the downloads stay byte for byte the CLI's.
findings = apply_overrides(shared.view(ctx).findings, overrides, datetime.now(timezone.utc))

st.title("Blocklist")
if ctx.run.status not in SUCCESSFUL:
    shared.say("error", f"Run #{ctx.run_id} is {ctx.run.status}: a run that did not succeed never feeds a "
                        "blocklist. Pick a successful run in the sidebar.")
    st.stop()

if "bl_reasons" not in st.session_state:
    st.session_state["bl_reasons"] = dashboard.default_block_reasons()
chosen = st.multiselect("Reasons that block", CHOICES, key="bl_reasons",
                        help="Default: the taxonomy's blocking reasons. Transient reasons never block by default; "
                             "run-level reasons never block at all.")
reasons = dashboard.block_reasons(chosen)
preview = blocklist_frame(findings, reasons)
if reasons is None:
    st.caption("The default policy: the same file as the command below.")
else:
    st.caption("A custom choice of reasons: the same file as the command below.")
st.code(_cli_line(ctx.store_path, ctx.run_id, reasons), language="bash", wrap_lines=True)

# The files say which run they come from, as the CLI's exports do.
provenance = Provenance.of_run("blocklist", ctx.run)
buttons = st.columns(len(FORMATS))
for column, (fmt, (label, suffix, mime)) in zip(buttons, FORMATS.items()):
    column.download_button(f"Download {label}", data=blocklist_bytes(findings, fmt, reasons, provenance),
                           file_name=f"blocklist-run{ctx.run_id}.{suffix}", mime=mime, key=f"bl_download_{fmt}",
                           on_click="ignore", icon=":material/download:", width="stretch")

st.subheader(f"Preview: {len(preview)} blocked targets")
shown = preview[[c for c in BLOCKLIST_COLUMNS if c in preview.columns]]
st.dataframe(shown, key="bl_preview", hide_index=True, width="stretch", column_config=shared.headers(shown))

changes = shared.load_blocklist_changes(ctx.store_path, ctx.version, ctx.run_id,
                                        None if reasons is None else tuple(sorted(reasons)))
st.subheader("Changes since the previous successful run")
if changes["previous_run_id"] is None:
    st.caption("No earlier successful run of this scope: every row is new.")
else:
    st.caption(f"Compared with run #{changes['previous_run_id']}, with the same choice of reasons.")
added, removed = st.columns(2)
with added:
    st.metric("Added", len(changes["added"]), border=True)
    st.dataframe(changes["added"][["model_id", "provider", "reason"]], key="bl_added", hide_index=True,
                 width="stretch", column_config={"model_id": "model"})
with removed:
    st.metric("Removed", len(changes["removed"]), border=True)
    st.dataframe(changes["removed"][["model_id", "provider", "reason"]].rename(columns={"reason": "reason_before"}),
                 key="bl_removed", hide_index=True, width="stretch",
                 column_config={"model_id": "model", "reason_before": "reason before"})

st.subheader("Route and request fixes")
routes = routes_frame(findings)
st.caption("Targets not blocked because the fault was ours: route each one as its working route "
           "(route_mismatch), or send it the request settings that worked (probe_error). The same file as "
           f"`python -m analysis export routes --store {shlex.quote(display_location(ctx.store_path))} --run "
           f"{ctx.run_id}`.")
routes_provenance = Provenance.of_run("routes", ctx.run)
route_buttons = st.columns(len(FORMATS))
for column, (fmt, (label, suffix, mime)) in zip(route_buttons, FORMATS.items()):
    column.download_button(f"Download fixes {label}", data=routes_bytes(findings, fmt, routes_provenance),
                           file_name=f"routes-run{ctx.run_id}.{suffix}", mime=mime, key=f"bl_routes_{fmt}",
                           on_click="ignore", icon=":material/download:", width="stretch")
st.dataframe(routes, key="bl_routes", hide_index=True, width="stretch", column_config=shared.headers(routes))

st.subheader("Overrides")
if overrides.empty:
    st.caption("No operator overrides. Add one with `python -m analysis override add MODEL[:PROVIDER] --allow|--block "
               "--reason TEXT [--expires DATE]`.")
else:
    st.caption("Operators' allow/block decisions, applied to every export above; an expired one no longer applies.")
    st.dataframe(overrides, key="bl_overrides", hide_index=True, width="stretch",
                 column_config=shared.headers(overrides))
