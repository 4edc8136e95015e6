"""Hostile upstream text, end to end: nothing an upstream sends can stop a scan, leak the token or reach a
terminal, a Markdown report or a CSV cell raw.

Every upstream field of the simulator (catalog ids, tags, mapping fields, error messages, codes and params,
raw bytes) carries hostile strings; the scan runs through the CLI in process, then every export, both
reports and the dashboard read the result.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import re

import pytest
from streamlit.testing.v1 import AppTest

from analysis import cli
from analysis.devtools.simulator import Scenario
from analysis.reports.generate import render_fleet_report, render_model_report
from analysis.store import open_store

from .helpers import FAST_FLAGS, PROJECT_ROOT

TOKEN = "hf_" + "QzXv7Lp2Wm9Kt4Rj8Hn3Bc6Yd1Fs5Gu0Ae"  # shaped like an hf_ token, not a real one
HOSTILE = [
    "busy \udc80 half an emoji",
    "\x1b]0;pwned\x07\x1b[2J clear screen",
    "line\r\nFAKE: run 99 ok, 0 blocked",
    "nul\x00byte",
    "\u202eevil right-to-left",
    '=HYPERLINK("http://evil.example","x")',
    "<script>alert(1)</script>",
    "**bold** [link](http://evil.example) `code` # heading",
    f"echo Bearer {TOKEN} and a fragment {TOKEN[-20:]}",
    "x" * 1_000_000,
]
_RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def _random_text(rng: random.Random, n: int) -> str:
    return "".join(chr(rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0x3000)])) for _ in range(n))


def hostile_scenario() -> Scenario:
    rng = random.Random(20261202)
    strings = HOSTILE + [_random_text(rng, 40) for _ in range(4)]
    models = [{"id": f"good/canary-{i}", "pipeline_tag": "text-generation", "downloads": 10_000 - i,
               "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0}]}
              for i in range(3)]
    for i, text in enumerate(strings):
        short = text[:60]
        models.append({
            "id": f"fuzz/model-{i}", "pipeline_tag": "text-generation", "downloads": 10, "library_name": short,
            "tags": [short, f"auth=Bearer {TOKEN}"], "gated": short,
            "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0,
                           "providerId": f"{short} {TOKEN}"}],
            "routes": {"*": {"kind": "error", "status": 400 + (i % 3) * 11, "message": text, "code": short,
                             "param": short[:20]}},
        })
        models.append({"id": f"fuzz/{short}", "pipeline_tag": "text-generation", "downloads": 5,
                       "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0}]})
    models.append({"id": "fuzz/raw-bytes", "pipeline_tag": "text-generation", "downloads": 5,
                   "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0}],
                   "routes": {"*": {"kind": "invalid_utf8", "status": 400}}})
    models.append({"id": "fuzz/echo", "pipeline_tag": "text-generation", "downloads": 5,
                   "providers": [{"provider": "p", "status": "live", "task": "conversational", "latency_ms": 0}],
                   "routes": {"*": {"kind": "echo_auth", "status": 400}}})
    return Scenario(name="hostile", token=TOKEN, provider_order=["p"], router={"latency_scale": 1}, models=models)


def _no_leak(text: str, where: str) -> None:
    assert TOKEN not in text, where
    for i in range(len(TOKEN) - 8):
        assert TOKEN[i:i + 12] not in text, (where, TOKEN[i:i + 12])


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    from analysis.devtools.simulator import SimulatorServer

    folder = tmp_path_factory.mktemp("hostile")
    store = folder / "rca.sqlite"
    out, err = io.StringIO(), io.StringIO()
    with SimulatorServer(hostile_scenario()) as server, pytest.MonkeyPatch.context() as mp, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv("HF_TOKEN", TOKEN)
        code = cli.main(["scan", "--hub-url", server.url, "--router-url", server.router_url, "--provider", "p",
                         "--store", str(store), "--route-checks", "0", *FAST_FLAGS])
    return code, out.getvalue(), err.getvalue(), store, folder


def test_the_scan_finishes_and_skips_hostile_ids(hostile_run):
    code, out, err, store, _ = hostile_run
    assert code == 0, err
    assert "skipped" in err and "catalog id" in err
    with open_store(store, readonly=True) as s:
        findings = s.findings(1)
    assert set(findings["model_id"]) == {f"good/canary-{i}" for i in range(3)} | {
        f"fuzz/model-{i}" for i in range(len(HOSTILE) + 4)} | {"fuzz/raw-bytes", "fuzz/echo"} | {
        "fuzz/" + "x" * 60}  # the only hostile id that is a plain repo id


def test_terminal_output_has_no_raw_control_character_and_no_token(hostile_run):
    _, out, err, _, _ = hostile_run
    for text in (out, err):
        assert not _RAW_CONTROL.search(text)
        _no_leak(text, "terminal")
    assert not any(line.startswith("FAKE") for line in (out + err).splitlines())  # no forged line


def test_the_store_holds_no_token_and_no_raw_control_character(hostile_run):
    _, _, _, store, _ = hostile_run
    with open_store(store, readonly=True) as s:
        frames = {"findings": s.findings(1), "catalog": s.catalog(1), "probes": s.probes(1)}
    for where, frame in frames.items():
        for column in frame.columns:
            for value in frame[column]:
                text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
                _no_leak(text, f"{where}.{column}")
                assert not _RAW_CONTROL.search(text.replace("\n", "").replace("\t", "")), (where, column)


@pytest.mark.parametrize("what, fmt", [("findings", "csv"), ("findings", "json"), ("findings", "python"),
                                       ("blocklist", "csv"), ("blocklist", "json"), ("blocklist", "python")])
def test_exports_are_neutralised_and_clean(hostile_run, capsys, what, fmt):
    _, _, _, store, _ = hostile_run
    assert cli.main(["export", what, "--store", str(store), "--format", fmt]) == 0
    text = capsys.readouterr().out
    _no_leak(text, f"{what} {fmt}")
    assert "\x00" not in text and "\x1b" not in text
    if fmt == "csv":
        for row in csv.reader(io.StringIO(text)):
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


@pytest.mark.slow
def test_reports_render_hostile_text_inert(hostile_run):
    _, _, _, store, folder = hostile_run
    out = folder / "reports"
    model = render_model_report(store, "fuzz/model-5", None, out_dir=out)  # the =HYPERLINK one
    fleet = render_fleet_report(store, None, None, out_dir=out)
    for path in (model.html, model.markdown, model.notebook, fleet.html, fleet.notebook):
        text = path.read_text(encoding="utf-8")
        _no_leak(text, path.name)
        assert "<script>alert(1)</script>" not in text, path.name
        assert "\x1b" not in text and "\x00" not in text and "\u202e" not in text, path.name
    markdown = model.markdown.read_text(encoding="utf-8")
    assert not _RAW_CONTROL.search(markdown)


def test_the_dashboard_renders_hostile_text_as_text(hostile_run, monkeypatch, tmp_path):
    _, _, _, store, _ = hostile_run
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("RCA_STORE", str(store))
    monkeypatch.setenv("RCA_HOME", str(tmp_path))
    for page, query in (("app_pages/overview.py", {}), ("app_pages/models.py", {}),
                        ("app_pages/detail.py", {"model": "fuzz/model-6", "provider": "p"})):
        at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=30)
        at.query_params.update(query)
        at.run()
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        for element in at.markdown:
            assert "<script>" not in element.value and TOKEN not in element.value
