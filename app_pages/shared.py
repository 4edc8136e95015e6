"""What every page shares: the sidebar (store and run), cached loads from the store, navigation and safe text.

Loads are cached with ``st.cache_data`` keyed on the store path, the store's
fingerprint (mtime and size of the file and its WAL) and the run id, so a run
written by a scan, here or by the CLI, shows up on the next rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis.devtools.sample import build_sample_store
from analysis.errors import RcaError
from analysis.outputs import dashboard, views
from analysis.schema import Run
from analysis.store import open_store

CONTEXT_KEY = "rca_context"
MODELS_PAGE = "app_pages/models.py"
DETAIL_PAGE = "app_pages/detail.py"
# Widget keys of the models page's filters, by ``filter_findings`` argument.
FILTER_KEYS = {"reasons": "models_reasons", "blocked": "models_blocked", "pipeline_tags": "models_tags",
               "mapping_statuses": "models_statuses", "search": "models_search", "view": "models_view"}
# The Models page's saved filters: every target, what needs an operator now, what changed since the last run.
MODEL_VIEWS = ("all targets", "needs action", "new since previous run")
_BOXES = {"error": st.error, "warning": st.warning, "info": st.info, "success": st.success}


@dataclass(frozen=True)
class Context:
    """The store and run the sidebar chose for this rerun.  ``error`` is set when there is nothing to show."""

    store_path: str
    version: tuple[int, ...]
    is_sample: bool
    run_id: int | None
    run: Run | None
    error: str | None
    error_detail: str = ""


# --------------------------------------------------------------------------- safe text


def say(kind: str, title: str, detail: str | None = None) -> None:
    """An alert box (``error``, ``warning``, ``info``, ``success``) with our own ``title``.

    ``detail`` carries upstream text (ids, URLs, error messages): it goes below
    the box as plain text, never through markdown, which would make a URL in an
    error message a live link.
    """
    if not detail:
        _BOXES[kind](title)
        return
    with st.container(border=True):
        _BOXES[kind](title)
        st.text(detail)


# Column headers in words, for tables that show stored columns as they are.
_HEADERS = {"model_id": "model", "model_string": "model string sent", "url": "URL", "n": "attempt",
            "http_status": "HTTP", "latency_ms": "latency (ms)", "started_at": "started (UTC)",
            "finished_at": "finished (UTC)", "error_code": "error code", "error_message": "error message",
            "run_id": "run", "run_status": "run status", "checked_at": "checked (UTC)", "provider_id": "provider's id",
            "error_signature": "cause (error signature)"}


def headers(frame: pd.DataFrame) -> dict[str, str]:
    """``column_config`` giving each column of ``frame`` a header in words instead of its stored name."""
    return {str(c): _HEADERS.get(str(c), str(c).replace("_", " ")) for c in frame.columns}


# --------------------------------------------------------------------------- cached loads


def _open(path: str):  # noqa: ANN202 - a Store
    return open_store(path, readonly=True)


@st.cache_data(show_spinner=False, max_entries=16)
def load_overrides(path: str, version: tuple[int, ...]) -> pd.DataFrame:
    with _open(path) as store:
        return store.overrides()


@st.cache_data(show_spinner=False, max_entries=16)
def load_runs(path: str, version: tuple[int, ...]) -> tuple[pd.DataFrame, int | None]:
    """``list_runs`` and ``default_run_id`` of the store."""
    with _open(path) as store:
        return views.list_runs(store), views.default_run_id(store)


@st.cache_data(show_spinner=False, max_entries=4)
def load_view(path: str, version: tuple[int, ...], run_id: int) -> views.RunView:
    """The run with its findings, catalog and probes."""
    with _open(path) as store:
        return views.load_run(store, run_id)


@st.cache_data(show_spinner=False, max_entries=8)
def load_changed_keys(path: str, version: tuple[int, ...], run_id: int) -> set[tuple[str, str]] | None:
    """The targets whose verdict is new since the previous successful run of the scope (``None``: no such run)."""
    with _open(path) as store:
        return views.changed_since_previous(store, run_id)


@st.cache_data(show_spinner=False, max_entries=4)
def load_models_table(path: str, version: tuple[int, ...], run_id: int) -> pd.DataFrame:
    """The models page's rows of a run (one Hub URL per model is computed once per run, not per rerun)."""
    return dashboard.models_table(load_view(path, version, run_id).findings)


@st.cache_data(show_spinner=False, max_entries=8)
def load_trend(path: str, version: tuple[int, ...], source: str, provider: str) -> pd.DataFrame:
    """``run_trend`` of one scope."""
    with _open(path) as store:
        return views.run_trend(store, source, provider)


@st.cache_data(show_spinner=False, max_entries=8)
def load_diff(path: str, version: tuple[int, ...], run_id: int) -> tuple[int | None, pd.DataFrame]:
    """The previous successful run of the same scope and ``run_diff`` from it to ``run_id``."""
    with _open(path) as store:
        previous = store.previous_ok_run(run_id)
        if previous is None:
            return None, pd.DataFrame()
        return previous, views.run_diff(store, previous, run_id)


@st.cache_data(show_spinner=False, max_entries=32)
def load_evidence(path: str, version: tuple[int, ...], run_id: int, model_id: str, provider: str) -> dict[str, Any]:
    """``model_evidence`` of one target."""
    with _open(path) as store:
        return views.model_evidence(store, run_id, model_id, provider)


@st.cache_data(show_spinner=False, max_entries=16)
def load_blocklist_changes(path: str, version: tuple[int, ...], run_id: int,
                           reasons: tuple[str, ...] | None) -> dict[str, Any]:
    """``blocklist_changes`` for a choice of blocking reasons (``None``: the stored policy)."""
    with _open(path) as store:
        return views.blocklist_changes(store, run_id, None if reasons is None else set(reasons))


# --------------------------------------------------------------------------- sidebar


def _ensure_sample(path: str) -> None:
    if Path(path).exists():
        return
    with st.status("First start: building the offline sample from the built-in simulator (about 20 s)...",
                   expanded=True) as status:
        build_sample_store(path, None, on_step=status.write)
        status.update(label="Sample store ready", state="complete", expanded=False)


def _run_picker(runs: pd.DataFrame, default: int | None, path: str) -> int:
    ids = [int(i) for i in runs["id"]]
    labels = dict(zip(ids, runs["label"]))
    state = st.session_state
    pending = state.pop("pending_run", None)
    if state.get("run_store") != path:
        state.pop("chosen_run", None)
    if pending in ids:
        state["run_id"] = pending
    elif state.get("run_id") not in ids:
        chosen = state.get("chosen_run")
        state["run_id"] = chosen if chosen in ids else default if default in ids else ids[0]
    run_id = int(st.selectbox("Run", ids, key="run_id", format_func=lambda i: labels.get(i, str(i)),
                              help="Default: the latest successful run."))
    state["run_store"], state["chosen_run"] = path, run_id
    return run_id


def real_store(shown: str) -> str:
    """The store a shown location stands for in this session (a database URL with its password), else itself."""
    locations: dict[str, str] = st.session_state.get("store_locations", {})
    return locations.get(shown, shown)


def sidebar(explicit_store: str | None) -> Context:
    """Draw the store and run pickers, load the run list, and remember the choice for the pages."""
    state = st.session_state
    choice = dashboard.choose_store(explicit_store)
    # Widget state can be dropped (a page switch, for one), so the choice also lives under
    # "chosen_store" and "chosen_run"; "pending_*" are choices made elsewhere (a scan, a chart).
    # A store may be a database URL with a password (RCA_STORE, --store, the Scan form): the field shows it without,
    # and this session keeps the real one under the shown form (never rendered, never stored).
    real_of: dict[str, str] = state.setdefault("store_locations", {})
    configured = str(choice.path)
    shown_configured = dashboard.shown_store(configured)
    real_of[shown_configured] = configured
    if "pending_store" in state:
        pending = str(state.pop("pending_store"))
        real_of[dashboard.shown_store(pending)] = pending
        state["store_path"] = dashboard.shown_store(pending)
    elif "store_path" not in state:
        state["store_path"] = state.get("chosen_store") or shown_configured
    run_id = run = error = None
    error_detail = ""
    version: tuple[int, ...] = ()
    path = st.sidebar.text_input("Viewing (store)", key="store_path",
                                 help="A store written by python -m analysis scan: an SQLite file, or a "
                                      "postgresql://user@host/db URL (RCA_STORE).").strip()
    state["chosen_store"] = path
    if path == shown_configured:
        st.sidebar.caption(f"Opened first: {choice.why}.")
    path = real_of.get(path, path)
    is_sample = dashboard.is_sample_store(path)
    try:
        if is_sample:
            _ensure_sample(path)
        version = dashboard.store_fingerprint(path)
        runs, default = load_runs(path, version)
    except (RcaError, OSError) as exc:
        error, error_detail = "Cannot open the store.", str(exc)
    else:
        if runs.empty:
            error = "The store has no runs yet: run a scan on the Scan page, or with the command below."
            error_detail = f"python -m analysis scan --store {path}"
        else:
            with st.sidebar:
                run_id = _run_picker(runs, default, path)
            run = Run.from_row({str(k): v for k, v in runs[runs["id"] == run_id].iloc[0].to_dict().items()})
    ctx = Context(path, version, is_sample, run_id, run, error, error_detail)
    state[CONTEXT_KEY] = ctx
    return ctx


_env_token: str | None = None  # process memory only: never session state, never the store


def set_env_token(value: str | None) -> None:
    """Called by ``app.py``, the one place of the app that reads the environment."""
    global _env_token
    _env_token = (value or "").strip() or None


def env_token() -> str | None:
    """The token from ``HF_TOKEN``, if the app was started with one."""
    return _env_token


def context() -> Context:
    """The sidebar's choice for this rerun (``app.py`` draws the sidebar before running the page)."""
    return st.session_state[CONTEXT_KEY]


def require_run() -> Context:
    """The context of a page that shows a run; on a store error or an empty store, an ``st.error`` and stop."""
    ctx = context()
    if ctx.error or ctx.run_id is None:
        say("error", ctx.error or "No run selected.", ctx.error_detail)
        st.stop()
    return ctx


def view(ctx: Context) -> views.RunView:
    """The selected run (cached)."""
    return load_view(ctx.store_path, ctx.version, ctx.run_id)


# --------------------------------------------------------------------------- navigation


def set_model_filters(**filters: Any) -> None:
    """Make the models page open with these filters (``filter_findings`` arguments); the rest are cleared."""
    st.session_state["model_filters"] = {name: filters.get(name) for name in FILTER_KEYS}
    st.session_state["apply_model_filters"] = True


def show_models(**filters: Any) -> None:
    """Switch to the models page with these filters."""
    set_model_filters(**filters)
    st.switch_page(MODELS_PAGE)


def show_detail(model_id: str, provider: str) -> None:
    """Switch to the detail page of one target; the query string makes the page a shareable link."""
    st.session_state["detail_target"] = (model_id, provider)
    st.switch_page(DETAIL_PAGE, query_params={"model": model_id, "provider": provider})
