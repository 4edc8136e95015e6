"""Scan page: start a scan as a process of its own, watch its progress from the store, resume a stopped one.

The scan is ``python -m analysis scan`` started detached (:mod:`analysis.outputs.background`):
leaving the page or closing the tab does not stop it, and coming back finds it
again in the store.  The token comes from ``HF_TOKEN`` or from a password field
that is emptied as the form is submitted; it goes into the scan process's
environment and nowhere else (not the store, not session state, not any message).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import streamlit as st

from analysis import config
from analysis.config import SOURCES, ScanConfig
from analysis.errors import RcaError, SettingError, UsageError, scrub
from analysis.outputs import background, dashboard
from analysis.store import open_store
from app_pages import shared

_DEFAULTS = ScanConfig()
REFRESH_SECONDS = 1.0  # how often a running scan's progress is read from the store
SIMULATOR_URL = "http://127.0.0.1:8765"  # `python -m analysis simulate`'s default address
PRESETS = {"huggingface": (_DEFAULTS.hub_url, _DEFAULTS.router_url),
           "simulator": (SIMULATOR_URL, f"{SIMULATOR_URL}/v1")}
SOURCE_LABELS = {"hub": "Hub API (models mapped to the provider)", "router": "router's model list",
                 "openai": "any OpenAI-compatible /models", "file": "a catalog file (upload below)"}
# Form field key -> (settings name, type of its value).
FIELDS: dict[str, tuple[str, type]] = {
    "scan_store": ("store", str), "scan_hub": ("hub_url", str), "scan_router": ("router_url", str),
    "scan_provider": ("provider", str), "scan_source": ("source", str), "scan_concurrency": ("concurrency", int),
    "scan_timeout": ("timeout", float), "scan_retries": ("retries", int), "scan_route_checks": ("route_checks", int),
    "scan_no_probe": ("no_probe", bool), "scan_max_tokens": ("max_tokens", int), "scan_backoff": ("backoff", float)}


# ScanConfig field -> the form's label for it (what a refused setting is called on this page).
FIELD_LABELS = {"hub_url": "Hub URL", "router_url": "Router URL", "provider": "Provider", "source": "Catalog source",
                "catalog_file": "Catalog file", "concurrency": "Concurrency", "timeout": "Timeout (s)",
                "retries": "Retries", "route_checks": "Route checks", "max_tokens": "max_tokens of the probe",
                "backoff": "Retry backoff (s)"}


def _defaults(ctx: shared.Context) -> dict[str, Any]:
    # The sample is rebuilt from scratch when missing: scan into a store of your own.
    store = str(config.default_store()) if ctx.is_sample or not ctx.store_path else dashboard.shown_store(
        ctx.store_path)
    return {"store": store, "hub_url": _DEFAULTS.hub_url, "router_url": _DEFAULTS.router_url,
            "provider": _DEFAULTS.provider, "source": _DEFAULTS.source, "concurrency": _DEFAULTS.concurrency or 0,
            "timeout": _DEFAULTS.timeout, "retries": _DEFAULTS.retries, "route_checks": _DEFAULTS.route_checks,
            "no_probe": not _DEFAULTS.probe, "max_tokens": _DEFAULTS.max_tokens, "backoff": _DEFAULTS.backoff}


def _fill_form_state(ctx: shared.Context) -> None:
    """Give each form field its last submitted value (or the default) unless it already holds what was typed.

    Streamlit drops a widget's state when a page without it runs, so the values
    submitted last also live under ``scan_settings`` (never the token).
    """
    last = {**_defaults(ctx), **st.session_state.get("scan_settings", {})}
    for key, (name, kind) in FIELDS.items():
        st.session_state.setdefault(key, kind(last[name]))


def _apply_preset(name: str) -> None:
    st.session_state["scan_hub"], st.session_state["scan_router"] = PRESETS[name]
    st.session_state["scan_source"] = "hub"


def _token_for(typed: str, *urls: str) -> str | None:
    # The server's own token only ever goes to Hugging Face: a viewer who types another URL
    # must not be able to collect it.
    env_token = shared.env_token()
    return typed.strip() or (env_token if env_token and dashboard.env_token_allowed(*urls) else None)


def _save_upload(upload: Any) -> str:
    """The uploaded catalog, saved under a name of ours in the data dir (the upload's own name is not used)."""
    folder = config.data_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".csv" if str(upload.name).lower().endswith(".csv") else ".json"
    path = folder / f"catalog-{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}{suffix}"
    path.write_bytes(upload.getvalue())
    return str(path.resolve())


def _on_submit() -> None:
    """Start the scan (a form callback: it runs before the page, so it may empty the token field)."""
    state = st.session_state
    typed = str(state.get("scan_token") or "")
    state["scan_token"] = ""  # the one field that does not keep what was typed
    settings = {name: kind(state[key]) for key, (name, kind) in FIELDS.items()}
    settings = {k: v.strip() if isinstance(v, str) else v for k, v in settings.items()}
    state["scan_settings"] = settings
    for key in ("scan_result", "scan_error"):
        state.pop(key, None)
    token = _token_for(typed, settings["hub_url"], settings["router_url"])
    upload = state.get("scan_catalog")
    try:
        if settings["source"] == "file" and upload is None:
            raise UsageError("Source 'a catalog file' needs a file: upload a JSON or CSV list of model ids.")
        if upload is not None and settings["source"] != "file":
            raise UsageError("A catalog file is uploaded, but the source is not 'a catalog file': choose that source, "
                           "or remove the file.")
        catalog_file = _save_upload(upload) if upload is not None else None
        cfg = ScanConfig(hub_url=settings["hub_url"], router_url=settings["router_url"],
                         provider=settings["provider"], source=settings["source"], catalog_file=catalog_file,
                         concurrency=settings["concurrency"] or None, timeout=settings["timeout"],
                         retries=settings["retries"], max_tokens=settings["max_tokens"], backoff=settings["backoff"],
                         route_checks=settings["route_checks"], probe=not settings["no_probe"], token=token)
        job = background.start_scan(cfg, shared.real_store(settings["store"]))
    except SettingError as exc:  # named by the form field that sets it
        def label(field: str) -> str:
            return FIELD_LABELS.get(field, field.replace("_", " "))

        worded = exc.worded(label).replace(f"{label(exc.field)} ", f"{label(exc.field)}: ", 1)
        state["scan_error"] = ("The scan did not start.", scrub(worded, token))
        return
    except (RcaError, OSError) as exc:
        state["scan_error"] = ("The scan did not start.", scrub(str(exc), token))
        return
    state["scan_watch"] = {"store": shared.real_store(settings["store"]), "job": job, "run_id": None}


def _on_resume(run_id: int, store: str, urls: tuple[str, str]) -> None:
    state = st.session_state
    typed = str(state.get("resume_token") or "")
    state["resume_token"] = ""
    for key in ("scan_result", "scan_error"):
        state.pop(key, None)
    try:
        job = background.start_resume(run_id, store, _token_for(typed, *urls))
    except OSError as exc:
        state["scan_error"] = ("The resume did not start.", str(exc))
        return
    state["scan_watch"] = {"store": store, "job": job, "run_id": run_id}


def _finish(store: str, kind: str, title: str, detail: str, run_id: int | None) -> None:
    """Leave the watch: keep the result to show, open the run in the sidebar, rerun the whole page."""
    state = st.session_state
    state.pop("scan_watch", None)
    state["scan_result"] = (kind, title, detail)
    if run_id is not None:
        state["pending_store"], state["pending_run"] = store, run_id
    st.rerun()


@st.fragment(run_every=REFRESH_SECONDS)
def _watch() -> None:
    """The running scan's progress, read again from the store every ``REFRESH_SECONDS``."""
    watch = st.session_state.get("scan_watch")
    if not watch:
        return
    store, job = watch["store"], watch["job"]
    run_id = watch["run_id"] or (background.job_run(job) if job else None)
    if run_id is None:
        if job is not None and background.job_alive(job):
            st.info(f"Starting the scan (process {job.pid})...", icon=":material/hourglass_top:")
            return
        code = background.exit_code(job) if job is not None else None
        _finish(store, "failed", f"The scan stopped before it created a run (exit code {code}).",
                background.log_tail(job) if job is not None else "", None)
        return
    watch["run_id"] = run_id
    try:
        progress = background.scan_progress(store, run_id)
    except RcaError as exc:
        _finish(store, "failed", "Cannot read the scan's store.", str(exc), None)
        return
    starting = job is not None and background.job_alive(job) and not progress.owner_alive
    if starting and progress.status in ("running", "incomplete"):  # a resume that has not claimed its run yet
        st.info(f"Resuming run #{run_id} (process {job.pid})...", icon=":material/hourglass_top:")
        return
    if progress.status == "running" and progress.owner_alive:
        with st.container(border=True):
            st.progress(progress.probed / progress.targets if progress.targets else 0.0,
                        text=dashboard.progress_text(progress, datetime.now(timezone.utc)))
            st.caption(f"Writing to {dashboard.shown_store(store)}. The scan is a process of its own: leave this page "
                       "or close the tab, it goes on, and this page finds it again.")
            if job is not None:
                st.caption("Command (the token, if any, is in its environment only):")
                st.code(background.command_line(job.args), language="bash", wrap_lines=True)
        return
    if progress.status == "running":  # its process is gone without finishing it: killed
        _finish(store, "failed", f"Run #{run_id} stopped before it finished: its process is gone.",
                background.log_tail(job) if job is not None else "", run_id)
        return
    with open_store(store, readonly=True) as s:
        run = s.get_run(run_id)
    kind, title, detail = dashboard.run_summary(run)
    _finish(store, kind, title, detail, run_id)


def _stores(ctx: shared.Context) -> list[str]:
    """Where a running or stopped scan is looked for: the store written to last, and the one being viewed."""
    written = shared.real_store(st.session_state.get("scan_settings", {}).get("store") or str(config.default_store()))
    return list(dict.fromkeys(p for p in (written, ctx.store_path)
                              if p and (Path(p).is_file() or dashboard.is_database(p))))


def _resume_offer(store: str, run_id: int) -> None:
    with open_store(store, readonly=True) as s:
        run = s.get_run(run_id)
    progress = background.scan_progress(store, run_id)
    with st.container(border=True):
        st.warning(f"Run #{run_id} stopped before it finished: {progress.probed} of {progress.targets} targets have "
                   "a result. Resuming probes only the others.", icon=":material/pause_circle:")
        st.caption(f"In {dashboard.shown_store(store)}. The same from a shell (with HF_TOKEN set):")
        st.code(dashboard.resume_command(run_id, store), language="bash", wrap_lines=True)
        with st.form(f"resume_form_{run_id}"):
            st.text_input("HF token for the resumed scan", type="password", key="resume_token",
                          help="Asked again: a token is never stored. Empty: the app's HF_TOKEN, for huggingface.co "
                               "endpoints only.")
            st.form_submit_button(f"Resume run #{run_id}", key="resume_submit", icon=":material/play_arrow:",
                                  on_click=_on_resume,
                                  args=(run_id, store, (str(run.hub_url or ""), str(run.router_url or
                                                                                          ""))))


ctx = shared.context()
_fill_form_state(ctx)

st.title("Scan")
st.caption("Reads the provider's catalog, probes every model with a minimal chat completion through the router, and "
           "stores the verdicts as a new run. The scan runs as a process of its own, so it survives leaving this "
           "page. To try it offline, start `python -m analysis simulate` and pick the local simulator below.")

if "scan_watch" not in st.session_state:  # reattach: a scan started earlier, from this tab, another one or a shell
    for path in _stores(ctx):
        running = background.running_run(path)
        if running is not None:
            st.session_state["scan_watch"] = {"store": path, "job": None, "run_id": running}
            break

if "scan_error" in st.session_state:
    shared.say("error", *st.session_state["scan_error"])
if "scan_result" in st.session_state:
    kind, title, detail = st.session_state["scan_result"]
    shared.say("success" if kind == "ok" else "error", title, detail)
    if st.button("Open its overview", key="scan_open_overview"):
        st.switch_page("app_pages/overview.py")

scanning = "scan_watch" in st.session_state
if scanning:
    _watch()
else:
    for path in _stores(ctx):
        stopped = background.stopped_run(path)
        if stopped is not None:
            _resume_offer(path, stopped)
            break

st.subheader("New scan")
presets = st.columns([1, 1, 3])
presets[0].button("Hugging Face", key="scan_preset_hf", on_click=_apply_preset, args=("huggingface",),
                  width="stretch", help="huggingface.co and router.huggingface.co")
presets[1].button("Local simulator", key="scan_preset_sim", on_click=_apply_preset, args=("simulator",),
                  width="stretch", help=f"{SIMULATOR_URL}: start it with python -m analysis simulate")
with st.form("scan_form", clear_on_submit=False):
    st.text_input("Write results to (store)", key="scan_store",
                  help="An SQLite file (created if missing) or a postgresql:// URL. The run is added to this store.")
    st.text_input("Hub URL", key="scan_hub")
    st.text_input("Router URL", key="scan_router")
    st.text_input("Provider", key="scan_provider",
                  help="A provider name (hf-inference, together, ...), a comma list, or all.")
    st.selectbox("Catalog source", SOURCES, key="scan_source", format_func=SOURCE_LABELS.get)
    st.file_uploader("Catalog file (with source: a catalog file)", type=["json", "csv"], key="scan_catalog",
                     help="A JSON list of model ids (or of objects with id), or a CSV with a model_id column.")
    left, middle, right = st.columns(3)
    left.number_input("Concurrency", min_value=0, max_value=1024, key="scan_concurrency",
                      help="Requests in flight at most, over every provider. 0: automatic (8 per provider in scope, "
                           "at most 256); each provider's own limit adapts to its answers.")
    middle.number_input("Timeout (s)", min_value=0.1, max_value=600.0, key="scan_timeout")
    right.number_input("Retries", min_value=0, max_value=10, key="scan_retries")
    st.checkbox("Metadata only (no chat requests): predict verdicts from the catalog; nothing is blocked",
                key="scan_no_probe")
    with st.expander("Advanced"):
        st.number_input("Route checks: other routes tried for a refused model", min_value=0, max_value=20,
                        key="scan_route_checks")
        st.number_input("max_tokens of the probe", min_value=1, max_value=4096, key="scan_max_tokens")
        st.number_input("Retry backoff (s)", min_value=0.0, max_value=60.0, key="scan_backoff")
    st.text_input("HF token", type="password", key="scan_token",
                  help="Used for this scan only: passed to the scan process's environment, never stored, logged or "
                       "shown. Emptied when you submit.")
    if shared.env_token():
        st.caption("Empty: HF_TOKEN from the app's environment is used, but only for huggingface.co endpoints; "
                   "any other endpoint gets the token typed here, or none.")
    st.form_submit_button("Run scan", key="scan_submit", type="primary", icon=":material/radar:",
                          on_click=_on_submit, disabled=scanning)
