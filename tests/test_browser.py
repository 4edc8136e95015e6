"""End to end: ``streamlit run app.py`` on a free port, driven by Debian's headless Chromium through Playwright.

Needs ``/usr/bin/chromium`` (``.ci/run`` installs it; never ``playwright install``).
Without it the test is skipped, unless ``RCA_REQUIRE_BROWSER=1`` makes that a failure.
Screenshots go to ``RCA_SCREENSHOT_DIR`` (default: the test's temp dir).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from analysis.devtools.simulator import synthetic_scenario

from .helpers import PROJECT_ROOT, SECRET_TOKEN, stop_process

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"]
ARCH = "katanemo/Arch-Router-1.5B"
START_SECONDS = 60
WAIT_MS = 30_000
WIDTH, HEIGHT = 1400, 1800
# Sample targets, one per verdict an operator acts on: (model, provider, words of its verdict).
DETAILS = {"blocked": ("openai-community/gpt2", "hf-inference", "Blocked"),
           "route-fix": ("Qwen/QwQ-32B", "fireworks-ai", "route"),
           "probe-fix": ("Qwen/Qwen3-0.6B", "hf-inference", "max_tokens=4096")}
# A scan long enough to leave and come back to: about 60 probes of 500 ms, two at a time.
SCAN_MODELS, SCAN_LATENCY_MS = 60, 500
SCAN_WAIT_MS = 90_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Poll the server's health endpoint until it answers, the process dies, or the deadline passes."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # the poll interval, not a wait for anything in particular
    pytest.fail(f"streamlit did not answer /_stcore/health within {START_SECONDS} s:\n"
                f"{log.read_text(errors='replace')}")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("RCA_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and RCA_REQUIRE_BROWSER=1: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


def app_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process a browser test starts: no token, no store from outside, and whatever it
    writes by default kept in the temp dir."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "RCA_STORE")}
    env["RCA_HOME"] = str(tmp_path / "home")
    return env


@contextlib.contextmanager
def dashboard(store: str, tmp_path: Path) -> Iterator[str]:
    """``streamlit run app.py -- --store STORE`` on a free port: its URL once healthy; stopped afterwards."""
    port = free_port()
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--", "--store", store],
            cwd=PROJECT_ROOT, env=app_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def dashboard_url(chromium, sample_store, tmp_path):
    """The dashboard on a copy of the sample store."""
    store = tmp_path / "rca.sqlite"
    shutil.copy(sample_store, store)
    with dashboard(str(store), tmp_path) as url:
        yield url


def screenshot_dir(tmp_path: Path) -> Path:
    shots = Path(os.environ.get("RCA_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def open_page(playwright, chromium):  # noqa: ANN001, ANN201 - Playwright objects
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)  # assertions wait as long as actions: a loaded machine renders slowly
    browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    page.set_default_timeout(WAIT_MS)
    return browser, page


def shoot(page, path: Path, last) -> None:  # noqa: ANN001 - Playwright objects
    from playwright.sync_api import expect

    # Taken once the page's last element has arrived and the run is over (its "Running..." widget gone):
    # a page draws top to bottom, and the status widget only shows after a moment.
    # Streamlit scrolls inside its main block, not the document: the viewport is the page.
    last.first.wait_for()
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000


def test_dashboard_in_chromium(dashboard_url, chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = screenshot_dir(tmp_path)
    count = re.compile(r"^(\d+) of (\d+) targets")
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, chromium)
        try:
            # Overview: the KPI tiles and the drawn Plotly charts.
            page.goto(dashboard_url)
            expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            bars = page.locator(".st-key-chart_reasons g.trace.bars g.point path")
            bars.first.wait_for()
            page.locator(".st-key-chart_trend g.trace.scatter").first.wait_for()
            expect(page.get_by_test_id("stMetric").first).to_be_visible()
            shoot(page, shots / "dashboard-overview.png",
                  page.get_by_role("heading", name="What changed since the previous run"))

            # A click on a bar opens the model list filtered to that reason...
            # Near the bar's end: on a log axis a bar starts far left of the drawn area (log 0), off the page.
            box = bars.first.bounding_box()
            bars.first.click(position={"x": box["width"] - 4, "y": box["height"] / 2}, force=True)
            expect(page.get_by_role("heading", name="Models")).to_be_visible()
            page.get_by_test_id("stDataFrame").wait_for()
            shown, total = map(int, count.match(page.get_by_text(count).inner_text()).groups())
            assert 0 < shown < total

            # ... and a click on a row opens that model's evidence.
            grid = page.get_by_test_id("stDataFrame").bounding_box()
            page.mouse.click(grid["x"] + 14, grid["y"] + 35 + 17)  # the first row's selection box
            expect(page.get_by_role("heading", name="Model detail")).to_be_visible()
            expect(page.get_by_role("heading", name="Probe attempts")).to_be_visible()
            assert "/detail?model=" in page.url

            # The whole table, triage first.
            page.goto(f"{dashboard_url}/models")
            page.get_by_test_id("stDataFrame").wait_for()
            expect(page.get_by_text(re.compile(r"^(\d+) of \1 targets"))).to_be_visible()
            shoot(page, shots / "dashboard-models.png", page.get_by_role("button", name="Download these rows"))

            # Narrowed by the search box to one sample model.
            search = page.get_by_role("textbox", name="Search")
            search.fill("Arch-Router")
            search.press("Enter")
            expect(page.get_by_text(re.compile(r"^1 of \d+ targets"))).to_be_visible()
            expect(page.get_by_text(ARCH, exact=True).first).to_be_attached()

            # Its detail: the verdict and the route that works.
            page.goto(f"{dashboard_url}/detail?model={ARCH}&provider=hf-inference")
            expect(page.get_by_text("Works: the router answered a chat completion.")).to_be_visible()
            expect(page.get_by_text(f"{ARCH}:hf-inference", exact=True).first).to_be_visible()

            # One detail page per kind of verdict an operator acts on.
            for name, (model, provider, words) in DETAILS.items():
                page.goto(f"{dashboard_url}/detail?model={model}&provider={provider}")
                expect(page.get_by_role("heading", name="Verdict")).to_be_visible()
                expect(page.get_by_text(words).first).to_be_visible()
                shoot(page, shots / f"dashboard-detail-{name}.png",
                      page.get_by_role("heading", name="Working alternatives"))

            page.goto(f"{dashboard_url}/blocklist")
            expect(page.get_by_role("heading", name="Route and request fixes")).to_be_attached()
            page.get_by_test_id("stDataFrame").first.wait_for()
            shoot(page, shots / "dashboard-blocklist.png", page.get_by_role("heading", name="Overrides"))
        finally:
            browser.close()


def test_a_scan_survives_leaving_the_page(dashboard_url, chromium, make_sim, tmp_path):
    """Start a scan, leave (a new session, as a closed tab), come back: still running, then finished."""
    from playwright.sync_api import expect, sync_playwright

    scenario = synthetic_scenario(SCAN_MODELS, latency_ms=SCAN_LATENCY_MS)
    scenario.token = SECRET_TOKEN  # the simulator answers only this token: the typed one must reach the scan
    server = make_sim(scenario)
    shots = screenshot_dir(tmp_path)
    running = re.compile(r"^Run #(\d+): (\d+ of \d+ targets probed|reading the catalog)")
    with sync_playwright() as playwright:
        browser, page = open_page(playwright, chromium)
        try:
            page.goto(f"{dashboard_url}/scan")
            expect(page.get_by_role("heading", name="Scan", exact=True)).to_be_visible()
            page.get_by_role("button", name="Local simulator").click()
            expect(page.get_by_role("textbox", name="Hub URL")).to_have_value("http://127.0.0.1:8765")
            page.get_by_role("textbox", name="Hub URL").fill(server.url)
            page.get_by_role("textbox", name="Router URL").fill(server.router_url)
            page.get_by_role("spinbutton", name="Concurrency").fill("2")
            page.get_by_role("spinbutton", name="Retries").fill("0")
            page.get_by_role("textbox", name="HF token").fill(SECRET_TOKEN)
            page.get_by_role("button", name="Run scan").click()
            progress = page.get_by_text(running)
            expect(progress).to_be_visible()
            run_id = running.match(progress.inner_text()).group(1)
            # The form kept what was typed, except the token.
            expect(page.get_by_role("textbox", name="Hub URL")).to_have_value(server.url)
            expect(page.get_by_role("textbox", name="HF token")).to_have_value("")

            # Leave: another page in a new session, as a closed tab would leave it.
            page.goto(dashboard_url)
            expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            page.goto(f"{dashboard_url}/scan")
            # Found again in the store, still running (perhaps still reading the catalog), then probing.
            expect(page.get_by_text(re.compile(rf"^Run #{run_id}: "))).to_be_visible()
            expect(page.get_by_text(re.compile(rf"^Run #{run_id}: \d+ of {SCAN_MODELS} targets probed"))
                   ).to_be_visible(timeout=SCAN_WAIT_MS)
            shoot(page, shots / "dashboard-scan.png", page.get_by_role("button", name="Run scan"))

            finished = page.get_by_text(re.compile(rf"^Run #{run_id} finished"))
            expect(finished).to_be_visible(timeout=SCAN_WAIT_MS)
            assert f"{SCAN_MODELS} targets, {SCAN_MODELS} working, 0 blocked" in finished.inner_text()
            shoot(page, shots / "dashboard-scan-finished.png", page.get_by_role("button", name="Run scan"))
        finally:
            browser.close()


def test_the_dashboard_on_a_postgresql_store_follows_a_scan_writing_to_it(chromium, postgres_server, make_sim,
                                                                         tmp_path):
    """Issue 13: the dashboard opened on a shared PostgreSQL store while a scan (another process) writes to it."""
    from playwright.sync_api import expect, sync_playwright

    url = postgres_server.new_database()
    server = make_sim(synthetic_scenario(SCAN_MODELS // 2, latency_ms=SCAN_LATENCY_MS))
    scan = subprocess.Popen([sys.executable, "-m", "analysis", "scan", "--hub-url", server.url, "--router-url",
                             server.router_url, "--store", url, "--concurrency", "1", "--retries", "0", "-q"],
                            cwd=tmp_path, env=app_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        with dashboard(url, tmp_path) as app, sync_playwright() as playwright:
            browser, page = open_page(playwright, chromium)
            try:
                page.goto(f"{app}/scan")
                expect(page.get_by_text(re.compile(r"^Run #1: "))).to_be_visible(timeout=SCAN_WAIT_MS)
                # A progress line is only drawn for a running scan: seen while the other process was writing.
                progress = page.get_by_text(re.compile(rf"^Run #1: \d+ of {SCAN_MODELS // 2} targets probed"))
                expect(progress).to_be_visible(timeout=SCAN_WAIT_MS)
                probed = int(re.match(r"^Run #1: (\d+) of", progress.inner_text()).group(1))
                assert probed < SCAN_MODELS // 2
                finished = page.get_by_text(re.compile(r"^Run #1 finished"))
                expect(finished).to_be_visible(timeout=SCAN_WAIT_MS)
                page.goto(app)
                expect(page.get_by_role("heading", name="Overview")).to_be_visible()
                expect(page.get_by_text(re.compile(rf"{SCAN_MODELS // 2} targets over"))).to_be_visible()
                page.locator(".st-key-chart_reasons g.trace.bars g.point path").first.wait_for()
                shoot(page, screenshot_dir(tmp_path) / "dashboard-postgresql.png",
                      page.get_by_role("heading", name="What changed since the previous run"))
            finally:
                browser.close()
        assert scan.wait(timeout=60) == 0
    finally:
        stop_process(scan)
