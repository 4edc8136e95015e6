"""Reports page: generate the papermill RCA report of a model or of the whole run, then view or download it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from analysis.config import reports_dir
from analysis.errors import RcaError
from analysis.reports.generate import render_fleet_report, render_model_report
from analysis.store import SUCCESSFUL
from app_pages import shared

RESULT_KEY = "report_result"

ctx = shared.require_run()
findings = shared.view(ctx).findings

st.title("Reports")
st.caption("Executes the parameterised notebooks in `notebooks/` with papermill against this store and run, and "
           "writes the executed notebook, a self-contained HTML page and (for a model) a Markdown rendering into "
           f"`{reports_dir()}`. The same as `python -m analysis report model|fleet`.")

kind = st.radio("Report", ["Model RCA", "Fleet RCA"], key="report_kind", horizontal=True)
model_id = None
compare = None
if kind == "Model RCA":
    models = sorted(findings["model_id"].unique()) if len(findings) else []
    if not models:
        shared.say("error", f"Run #{ctx.run_id} has no findings to report on.")
        st.stop()
    default = models.index("katanemo/Arch-Router-1.5B") if "katanemo/Arch-Router-1.5B" in models else 0
    model_id = st.selectbox("Model", models, index=default, key="report_model")
else:
    runs = shared.load_runs(ctx.store_path, ctx.version)[0]
    earlier = [int(r) for r in runs[runs["status"].isin(SUCCESSFUL) & (runs["id"] < ctx.run_id)]["id"]]
    options = [None, *earlier]
    compare = st.selectbox("Compare with", options, key="report_compare",
                           format_func=lambda r: "the previous successful run" if r is None else f"run #{r}")

if st.button("Generate report", key="report_generate", type="primary", icon=":material/play_arrow:"):
    out_dir = reports_dir()
    try:
        with st.spinner("Running the notebook (a few seconds)..."):
            if model_id is not None:
                files = render_model_report(ctx.store_path, model_id, ctx.run_id, out_dir=out_dir)
            else:
                files = render_fleet_report(ctx.store_path, ctx.run_id, compare, out_dir=out_dir)
    except RcaError as exc:
        st.session_state.pop(RESULT_KEY, None)
        shared.say("error", "The report could not be generated.", str(exc))
    else:
        st.session_state[RESULT_KEY] = {"html": str(files.html), "notebook": str(files.notebook),
                                        "markdown": str(files.markdown) if files.markdown else None}

result = st.session_state.get(RESULT_KEY)
if result and Path(result["html"]).exists():
    html_path = Path(result["html"])
    st.success(f"Report written: {html_path.name}")
    buttons = st.columns(3)
    buttons[0].download_button("Download HTML", data=html_path.read_bytes(), file_name=html_path.name,
                               mime="text/html", key="report_download_html", on_click="ignore")
    nb_path = Path(result["notebook"])
    buttons[1].download_button("Download notebook", data=nb_path.read_bytes(), file_name=nb_path.name,
                               mime="application/x-ipynb+json", key="report_download_ipynb", on_click="ignore")
    if result["markdown"]:
        md_path = Path(result["markdown"])
        buttons[2].download_button("Download Markdown", data=md_path.read_bytes(), file_name=md_path.name,
                                   mime="text/markdown", key="report_download_md", on_click="ignore")
    # The report escapes every upstream string itself (tested); its own scripts are plotly.js.
    components.html(html_path.read_text(encoding="utf-8"), height=900, scrolling=True)
