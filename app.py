"""Catalog RCA Explorer dashboard: ``streamlit run app.py [-- --store PATH]``.

The store is ``--store PATH`` or the ``RCA_STORE`` environment variable, else
``rca.sqlite`` in the data dir (``RCA_HOME``, else ``./data``) if it exists, else
the built-in offline sample (built on first start, and labelled).  This file,
``analysis/cli.py`` and ``analysis/config.py`` (the paths) are the only places that
read the environment.  Pages live in ``app_pages/``; add one by adding an
``st.Page`` to ``PAGES``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st

from analysis.outputs import dashboard
from app_pages import shared  # Streamlit puts this file's folder on the path, so app_pages imports from anywhere


def explicit_store() -> str | None:
    """``--store PATH`` after ``--`` on the ``streamlit run`` line, else ``RCA_STORE``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.store or os.environ.get("RCA_STORE") or None


# A local icon: the app fetches nothing from the network, not even its favicon.
st.set_page_config(page_title="Catalog RCA Explorer", page_icon=str(Path(__file__).with_name("app_pages") / "icon.png"),
                   layout="wide")

PAGES = [
    st.Page("app_pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("app_pages/models.py", title="Models", icon=":material/table_rows:"),
    st.Page("app_pages/detail.py", title="Model detail", icon=":material/troubleshoot:"),
    st.Page("app_pages/blocklist.py", title="Blocklist", icon=":material/block:"),
    st.Page("app_pages/scan.py", title="Scan", icon=":material/radar:"),
    st.Page("app_pages/reports.py", title="Reports", icon=":material/description:"),
]

shared.set_env_token(os.environ.get("HF_TOKEN"))
page = st.navigation(PAGES)
ctx = shared.sidebar(explicit_store())
if ctx.is_sample:
    st.info("You are looking at **sample data**: offline scans of the built-in simulator, built on a real "
            "capture of Hugging Face's inference-provider table. Run a scan, or choose your own store in the "
            "sidebar.", icon=":material/science:")
if ctx.run is not None:
    problem = dashboard.run_problem(ctx.run, ctx.store_path)
    if problem:
        shared.say("warning", *problem)
page.run()
