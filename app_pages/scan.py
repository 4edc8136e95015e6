"""Scan page: run a scan from a form, with live progress, then open the new run.

The token comes from ``HF_TOKEN`` or from a password field in a form that
clears on submit; it goes into the scan's config and nowhere else (not the
store, not session state beyond the form, not any message).
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from analysis import config
from analysis.errors import RcaError, scrub
from analysis.outputs import dashboard
from analysis.pipeline.scan import ScanConfig, ScanObserver, run_scan
from analysis.store import open_store
from app_pages import shared

_DEFAULTS = ScanConfig()
# How often the progress bar redraws: each redraw is a message to the browser.
_REDRAW_SECONDS = 0.25


class StreamlitObserver(ScanObserver):
    """Draws a scan's progress inside an ``st.status`` box: catalog pages, then a bar with counts so far."""

    def __init__(self, status: Any) -> None:
        self.status = status
        self.line = status.empty()
        self.bar: Any = None
        self.total = 0
        self.done = 0
        self.drawn_at = 0.0

    def run_started(self, run_id: int) -> None:
        self.status.update(label=f"Run #{run_id}: reading the catalog...", expanded=True)

    def catalog_page(self, pages: int, models: int) -> None:
        self.line.text(f"catalog: page {pages}, {models} models")

    def catalog_done(self, models: int, targets: int, router_listed: int | None) -> None:
        listed = "router list unavailable" if router_listed is None else f"{router_listed} listed by the router"
        self.line.text(f"catalog: {models} models, {targets} targets to probe, {listed}")

    def warning(self, text: str) -> None:
        shared.say("warning", "Warning", text)

    def probes_started(self, total: int, already_done: int) -> None:
        self.total, self.done = total, already_done
        self.status.update(label=f"Probing {total} targets...", expanded=True)
        self.bar = self.status.progress(0.0, text=f"0/{total} probed")

    def probe_done(self, result: Any, counts: dict[str, int]) -> None:
        if result.kind == "primary":  # rechecks, experiments and route checks are extra evidence, not targets
            self.done += 1
        now = time.monotonic()
        if self.bar is not None and (now - self.drawn_at > _REDRAW_SECONDS or self.done >= self.total):
            self.drawn_at = now
            so_far = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            self.bar.progress(min(self.done / max(self.total, 1), 1.0),
                              text=f"{self.done}/{self.total} probed: {so_far}")

    def probes_finished(self) -> None:
        self.status.update(label="Diagnosing and saving...")


def _last_settings(ctx: shared.Context) -> dict[str, Any]:
    # The sample is rebuilt from scratch when missing: scan into a store of your own.
    store = str(config.default_store()) if ctx.is_sample or not ctx.store_path else ctx.store_path
    defaults = {"store": store, "hub_url": _DEFAULTS.hub_url, "router_url": _DEFAULTS.router_url,
                "provider": _DEFAULTS.provider, "concurrency": _DEFAULTS.concurrency,
                "timeout": _DEFAULTS.timeout, "retries": _DEFAULTS.retries, "max_tokens": _DEFAULTS.max_tokens,
                "backoff": _DEFAULTS.backoff}
    return {**defaults, **st.session_state.get("scan_settings", {})}


def _scan(settings: dict[str, Any], token: str | None) -> None:
    config = ScanConfig(hub_url=settings["hub_url"], router_url=settings["router_url"],
                        provider=settings["provider"], concurrency=int(settings["concurrency"]),
                        timeout=float(settings["timeout"]), retries=int(settings["retries"]),
                        max_tokens=int(settings["max_tokens"]), backoff=float(settings["backoff"]), token=token)
    try:
        with open_store(settings["store"]) as store, st.status("Starting the scan...", expanded=True) as status:
            outcome = run_scan(config, store, StreamlitObserver(status))
            status.update(label="Scan finished", state="complete" if outcome.status == "ok" else "error")
    except RcaError as exc:
        shared.say("error", "The scan stopped.", scrub(str(exc), token))
        return
    except Exception as exc:  # noqa: BLE001 - a page shows errors; it never shows a traceback
        shared.say("error", "The scan stopped unexpectedly.", scrub(f"{type(exc).__name__}: {exc}", token))
        return
    kind, title, detail = dashboard.scan_result(outcome)
    st.session_state["scan_result"] = (kind, title, scrub(detail, token))
    st.session_state["pending_store"] = settings["store"]
    st.session_state["pending_run"] = outcome.run_id
    st.rerun()


ctx = shared.context()
env_token = shared.env_token()
last = _last_settings(ctx)

st.title("Scan")
st.caption("Reads the provider's catalog from the Hub API, probes every model with a minimal chat completion "
           "through the router, and stores the verdicts as a new run. To try it offline, start "
           "`python -m analysis simulate` and use the URLs it prints (hub `http://127.0.0.1:8765`, router "
           "`http://127.0.0.1:8765/v1`).")

with st.form("scan_form", clear_on_submit=True):
    store_path = st.text_input("Write results to (store file)", value=last["store"], key="scan_store",
                               help="Created if missing. The run is added to this store.")
    hub_url = st.text_input("Hub URL", value=last["hub_url"], key="scan_hub")
    router_url = st.text_input("Router URL", value=last["router_url"], key="scan_router")
    provider = st.text_input("Provider", value=last["provider"], key="scan_provider",
                             help="A provider name (hf-inference, together, ...), a comma list, or all.")
    left, middle, right = st.columns(3)
    concurrency = left.number_input("Concurrency", min_value=1, max_value=1024, value=int(last["concurrency"]),
                                    key="scan_concurrency")
    timeout = middle.number_input("Timeout (s)", min_value=0.1, max_value=600.0, value=float(last["timeout"]),
                                  key="scan_timeout")
    retries = right.number_input("Retries", min_value=0, max_value=10, value=int(last["retries"]),
                                 key="scan_retries")
    with st.expander("Advanced"):
        max_tokens = st.number_input("max_tokens of the probe", min_value=1, max_value=4096,
                                     value=int(last["max_tokens"]), key="scan_max_tokens")
        backoff = st.number_input("Retry backoff (s)", min_value=0.0, max_value=60.0, value=float(last["backoff"]),
                                  key="scan_backoff")
    typed_token = st.text_input("HF token", type="password", key="scan_token",
                                help="Used for this scan only: never stored, logged or shown.")
    if env_token:
        st.caption("Empty: HF_TOKEN from the app's environment is used, but only for huggingface.co endpoints; "
                   "any other endpoint gets the token typed here, or none.")
    submitted = st.form_submit_button("Run scan", key="scan_submit", type="primary", icon=":material/radar:")

if submitted:
    # The typed token leaves session state now: it lives on only in this run's ScanConfig.
    if "scan_token" in st.session_state:
        del st.session_state["scan_token"]
    settings = {"store": store_path.strip(), "hub_url": hub_url.strip(), "router_url": router_url.strip(),
                "provider": provider.strip(), "concurrency": concurrency, "timeout": timeout, "retries": retries,
                "max_tokens": max_tokens, "backoff": backoff}
    st.session_state["scan_settings"] = settings
    st.session_state.pop("scan_result", None)
    # The server's own token only ever goes to Hugging Face: a viewer who types another URL
    # must not be able to collect it.
    allowed = dashboard.env_token_allowed(settings["hub_url"], settings["router_url"])
    _scan(settings, typed_token.strip() or (env_token if allowed else None))

if "scan_result" in st.session_state:
    kind, title, detail = st.session_state["scan_result"]
    shared.say("success" if kind == "ok" else "error", title, detail)
    if st.button("Open its overview", key="scan_open_overview"):
        st.switch_page("app_pages/overview.py")
