"""End to end: ``streamlit run app.py`` on a free port, driven by Debian's headless Chromium through Playwright.

Needs ``/usr/bin/chromium`` (``.ci/run`` installs it; never ``playwright install``).
Without it the test is skipped, unless ``RCA_REQUIRE_BROWSER=1`` makes that a failure.
Screenshots go to ``RCA_SCREENSHOT_DIR`` (default: the test's temp dir).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .helpers import PROJECT_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"]
ARCH = "katanemo/Arch-Router-1.5B"
START_SECONDS = 60
WAIT_MS = 30_000


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


@pytest.fixture
def dashboard_url(chromium, sample_store, tmp_path):
    """The dashboard on a copy of the sample store, stopped by its own PID afterwards."""
    store = tmp_path / "rca.sqlite"
    shutil.copy(sample_store, store)
    port = free_port()
    log = tmp_path / "streamlit.log"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "RCA_STORE")}
    env["RCA_HOME"] = str(tmp_path / "home")  # whatever the app writes by default stays in the temp dir
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--", "--store", str(store)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_dashboard_in_chromium(dashboard_url, chromium, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("RCA_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    count = re.compile(r"^(\d+) of (\d+) targets")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(WAIT_MS)

            # Overview: the KPI tiles and a drawn Plotly chart.
            page.goto(dashboard_url)
            expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            bars = page.locator(".st-key-chart_reasons g.trace.bars g.point path")
            bars.first.wait_for()
            expect(page.get_by_test_id("stMetric").first).to_be_visible()
            page.screenshot(path=str(shots / "dashboard-overview.png"), full_page=True)

            # A click on a bar opens the model list filtered to that reason...
            bars.first.click(force=True)
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

            # The table, narrowed by the search box to one sample model.
            page.goto(f"{dashboard_url}/models")
            page.get_by_test_id("stDataFrame").wait_for()
            search = page.get_by_role("textbox", name="Search")
            search.fill("Arch-Router")
            search.press("Enter")
            expect(page.get_by_text(re.compile(r"^1 of \d+ targets"))).to_be_visible()
            expect(page.get_by_text(ARCH, exact=True).first).to_be_attached()
            page.screenshot(path=str(shots / "dashboard-models.png"), full_page=True)

            # Its detail: the verdict and the route that works.
            page.goto(f"{dashboard_url}/detail?model={ARCH}&provider=hf-inference")
            expect(page.get_by_text("Works: the router answered a chat completion.")).to_be_visible()
            expect(page.get_by_text(f"{ARCH}:hf-inference", exact=True).first).to_be_visible()
            page.screenshot(path=str(shots / "dashboard-detail.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "dashboard-models.png").stat().st_size > 10_000
