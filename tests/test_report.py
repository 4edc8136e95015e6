"""Papermill reports: real kernels against a seeded store, the CLI end to end, safety of names and text."""

from __future__ import annotations

import html
import json
import re
import shutil
import sqlite3
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from analysis.errors import StoreError, UsageError
from analysis.outputs import views
from analysis.reports import sections as rs
from analysis.reports.generate import ReportFiles, render_fleet_report, render_model_report, safe_stem
from analysis.reports.render import BulletList, Code, CodeBlock, Paragraph, Stack, Strong, Table, md_escape
from analysis.reports.runner import (
    KERNEL_NAME,
    NotebookFailed,
    _pinned_manager_class,
    _write_kernel_spec,
    kernel_spec_overrides,
    run_notebook,
)
from analysis.store import open_store
from analysis.taxonomy import BLOCKING
from tests.helpers import SECRET_TOKEN, run_cli

ARCH = "katanemo/Arch-Router-1.5B"
MODEL_SECTIONS = ["## Summary", "## Evidence", "### Catalog entry", "### Router model list", "### Probe attempts",
                  "### History across runs", "## Why", "## Recommendations", "## Conclusion"]
HOSTILE_TEXT = ("<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3)) "
                "![i](http://x/i.png)")
RAW_MARKUP = ["<script>alert", "<img", 'href="javascript', ">click</a>"]  # a bare URL may be autolinked


def _copy(store: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "store.sqlite"
    shutil.copy(store, target)
    return target


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _runs(store: Path) -> tuple[int, int | None, int]:
    """The latest successful run, the one before it (same scope) and the first failed run."""
    with open_store(store, create=False) as db:
        latest = db.latest_run_id("ok")
        runs = db.runs()
        return latest, db.previous_ok_run(latest), int(runs.loc[runs["status"] == "failed", "id"].min())


def _latest_findings(store: Path) -> pd.DataFrame:
    with open_store(store, create=False) as db:
        return db.findings(db.latest_run_id("ok"))


def _no_token_anywhere(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET_TOKEN.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------- executed reports, shared


@pytest.fixture(scope="module")
def model_report(sample_store, tmp_path_factory):
    """``report model`` for Arch-Router through the real CLI, with a token in the environment."""
    base = tmp_path_factory.mktemp("model-report")
    store = _copy(sample_store, base / "store")
    out = base / "out"
    result = run_cli("report", "model", "--model", ARCH, "--store", str(store), "--out", str(out),
                     env={"HF_TOKEN": SECRET_TOKEN})
    return result, out, store


@pytest.fixture(scope="module")
def fleet_report(sample_store, tmp_path_factory):
    """``report fleet`` on the latest successful run, through the real CLI, with a token set."""
    base = tmp_path_factory.mktemp("fleet-report")
    store = _copy(sample_store, base / "store")
    out = base / "out"
    result = run_cli("report", "fleet", "--store", str(store), "--out", str(out), env={"HF_TOKEN": SECRET_TOKEN})
    return result, out, store


def test_model_report_cli_writes_notebook_html_markdown(model_report):
    result, out, _ = model_report
    assert result.returncode == 0, result.stderr
    stem = "model_rca-katanemo__Arch-Router-1.5B"
    assert _files(out) == {f"{stem}.ipynb", f"{stem}.html", f"{stem}.md"}
    assert result.stdout.split() == [str(out / f"{stem}.html"), str(out / f"{stem}.md"), str(out / f"{stem}.ipynb")]
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr


def test_model_report_notebook_is_executed_without_errors(model_report):
    _, out, store = model_report
    nb = nbformat.read(next(out.glob("*.ipynb")), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert str(store.resolve()) in injected.source and f"run_id = {_runs(store)[0]}" in injected.source
    assert nb.metadata.kernelspec["name"] == "python3"  # the temporary kernel spec does not leak out


def test_model_report_html_holds_the_verdict(model_report):
    _, out, store = model_report
    page = next(out.glob("*.html")).read_text()
    verdict = rs.verdict(rs.model_rca(store, "", ARCH))
    assert verdict.startswith(f"{ARCH} works through our route: {ARCH}:hf-inference answered")
    assert html.escape(verdict) in page
    assert f"<title>Model RCA: katanemo/Arch-Router-1.5B (run {_runs(store)[0]})</title>" in page
    assert "rs.model_rca" not in page  # code is hidden
    assert not re.search(r"<script[^>]*\bsrc=", page)


def test_model_markdown_has_every_section(model_report):
    _, out, _ = model_report
    text = next(out.glob("*.md")).read_text()
    lines = text.splitlines()
    assert all(section in lines for section in MODEL_SECTIONS)
    assert "<table" not in text  # outputs in their Markdown form, not pasted HTML
    assert "| hf-inference | primary | 1 |" in text  # the probe attempt row
    assert "`katanemo/Arch-Router-1.5B:hf-inference`" in text  # the exact model string


def test_arch_router_conclusion_follows_the_evidence(model_report):
    _, out, store = model_report
    text = next(out.glob("*.md")).read_text()
    conclusion = text.split("## Conclusion", 1)[1]
    assert "Keep katanemo/Arch-Router-1.5B:hf-inference listed and do not block it" in conclusion
    assert "The catalog agrees that katanemo/Arch-Router-1.5B:hf-inference is a chat model: pipeline tag " \
           "text\\-generation" in conclusion.replace("text-generation", "text\\-generation")
    failed = _runs(store)[2]
    assert f"Run {failed} failed at run level (endpoint\\_error" in conclusion
    assert "That run judged no model and blocked nothing" in conclusion
    for guess in ("not a chat", "routing model", "classification"):
        assert guess not in text.lower()


def test_model_report_has_no_token(model_report):
    result, out, _ = model_report
    _no_token_anywhere(out)
    assert SECRET_TOKEN not in result.stdout + result.stderr


def _fleet_page(out: Path, store: Path) -> Path:
    return out / f"catalog_rca-run{_runs(store)[0]}.html"


def test_fleet_report_cli(fleet_report):
    result, out, store = fleet_report
    assert result.returncode == 0, result.stderr
    latest = _runs(store)[0]
    assert _files(out) == {f"catalog_rca-run{latest}.ipynb", f"catalog_rca-run{latest}.html"}
    nb = nbformat.read(out / f"catalog_rca-run{latest}.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_fleet_html_charts_are_inline_and_offline(fleet_report):
    _, out, store = fleet_report
    page = _fleet_page(out, store).read_text()
    assert page.count('class="plotly-graph-div"') == 2 and page.count("Plotly.newPlot(") == 2
    assert page.count("* plotly.js v") == 1  # the library itself, inlined once
    assert not re.search(r"<script[^>]*\bsrc=", page)  # no CDN: not plotly, not require.js, not MathJax
    verdict = rs.fleet_verdict(rs.fleet_rca(store, "", ""))
    assert re.match(rf"Run {_runs(store)[0]}: \d+ of \d+ targets \(\d+ models\) work", verdict)
    assert html.escape(verdict) in page


def test_fleet_html_sections(fleet_report):
    _, out, store = fleet_report
    page = _fleet_page(out, store).read_text()
    latest, previous, _ = _runs(store)
    findings = _latest_findings(store)
    blocked = int((findings["blocked"] & ~findings["predicted"]).sum())
    causes = views.top_causes(findings)
    assert len(causes) and html.escape(causes.iloc[0]["error_signature"]) in page  # ranked by signature
    for text in ("Recommendations", "Block the ", "Fix the route of ", "request settings that worked",
                 "Top causes", "Totals per reason", "Totals per pipeline tag", "Most-failing authors",
                 "Changes against the compared run", f"From run {previous} to run {latest}.", "Newly blocked: ",
                 "Recovered: ", "Reason changed: ", f"{blocked} blocked targets.", "Conflicting evidence"):
        assert text in page, text
    for model_id in findings.loc[findings["blocked"], "model_id"]:
        assert html.escape(model_id) in page  # the full blocklist


def test_fleet_report_has_no_token(fleet_report):
    result, out, _ = fleet_report
    _no_token_anywhere(out)
    assert SECRET_TOKEN not in result.stdout + result.stderr


def test_fleet_report_api_with_an_explicit_comparison(sample_store, tmp_path):
    """The dashboard's entry point: any run against any other, here the failed run (which blocked nothing)."""
    latest, _, failed = _runs(sample_store)
    files = render_fleet_report(sample_store, latest, failed, out_dir=tmp_path)
    assert files == ReportFiles(tmp_path.resolve() / f"catalog_rca-run{latest}-vs{failed}.ipynb",
                                tmp_path.resolve() / f"catalog_rca-run{latest}-vs{failed}.html", None)
    page = files.html.read_text()
    assert f"compared with run {failed}" in page and f"From run {failed} to run {latest}." in page
    assert "Newly blocked: 0" not in page  # nothing was blocked before, so every block is new


@pytest.mark.browser
def test_fleet_charts_render_with_no_network(fleet_report):
    """Headless Chromium with every non-file request refused still draws both charts."""
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's Chromium at /usr/bin/chromium")
    _, out, _ = fleet_report
    refused, errors = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                   else (refused.append(route.request.url), route.abort()))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(_fleet_page(out, fleet_report[2]).as_uri())
        page.wait_for_selector(".plotly-graph-div .main-svg", timeout=15000)
        charts = page.locator(".plotly-graph-div").count()
        bars = page.locator(".plotly-graph-div .point").count()
        browser.close()
    assert charts == 2 and bars > 10
    assert refused == [] and errors == []


# --------------------------------------------------------------------------- hostile ids and text


def _seed_hostile(store: Path, old: str, new: str) -> None:
    """Rename ``old`` to ``new`` in every table and put markup into its message, detail and error bodies."""
    db = sqlite3.connect(store)
    with db:
        for table in ("findings", "catalog", "probes", "targets"):
            db.execute(f"UPDATE {table} SET model_id = ? WHERE model_id = ?", (new, old))
        db.execute("UPDATE findings SET message = ?, detail = ? WHERE model_id = ?",
                   (HOSTILE_TEXT, HOSTILE_TEXT, new))
        rows = db.execute("SELECT rowid, attempt_log_json FROM probes WHERE model_id = ?", (new,)).fetchall()
        for rowid, log in rows:
            attempts = [{**a, "error_message": HOSTILE_TEXT} for a in json.loads(log)]
            db.execute("UPDATE probes SET attempt_log_json = ?, error_message = ? WHERE rowid = ?",
                       (json.dumps(attempts), HOSTILE_TEXT, rowid))
    db.close()


def test_hostile_model_id_writes_only_inside_out_and_escapes_text(sample_store, tmp_path):
    hostile = "../../<script>alert(1)</script>/" + "x" * 400
    store = _copy(sample_store, tmp_path / "store")
    findings = _latest_findings(store)
    refused = findings[findings["reason"].isin(BLOCKING) & findings["http_status"].notna()]
    victim = refused.iloc[0]
    _seed_hostile(store, victim["model_id"], hostile)
    out = tmp_path / "a" / "b" / "out"
    before = _files(tmp_path)
    files = render_model_report(store, hostile, out_dir=out)
    after = _files(tmp_path)
    assert isinstance(files, ReportFiles)
    new = after - before
    assert new and all(path.startswith("a/b/out") or path in ("a", "a/b") for path in new), new
    assert {p.parent for p in (files.notebook, files.html, files.markdown)} == {out.resolve()}
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p.name) and len(p.name) < 120
               for p in (files.notebook, files.html, files.markdown))
    page, markdown = files.html.read_text(), files.markdown.read_text()
    # Raw markup may stand in the Markdown only inside code spans, which renderers show as text.
    rendered = _nbconvert_html(markdown)
    for raw in RAW_MARKUP:
        assert raw not in page, raw
        assert raw not in rendered, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    assert victim["reason"].replace("_", "\\_") in markdown and "## Conclusion" in markdown


@pytest.mark.parametrize("model_id", ["../../etc/passwd", "a/b\x00c", "x" * 5000, "<script>alert(1)</script>",
                                      "..", ".", "/", "", "con", "a\\b", "ünïcödé/模型", "\udcff"])
def test_safe_stem(model_id):
    stem = safe_stem(model_id)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem) and len(stem) <= 93  # 80 + "-" + 12 hex


def test_safe_stem_keeps_plain_ids_readable_and_distinct():
    assert safe_stem(ARCH) == "katanemo__Arch-Router-1.5B"
    ids = ["a/b", "a_b", "a__b", "a b", "a/b/", "x" * 100, "x" * 101]
    assert len({safe_stem(i) for i in ids}) == len(ids)


def test_unknown_model_writes_nothing(sample_store, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=f"has no finding in run {_runs(sample_store)[0]}"):
        render_model_report(sample_store, "a/b\x00c", out_dir=out)
    assert not out.exists()


def test_cli_unknown_model_exits_2(sample_store, tmp_path):
    result = run_cli("report", "model", "--model", "../../etc/passwd", "--store", str(sample_store),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: model '../../etc/passwd' has no finding in run {_runs(sample_store)[0]}"
    assert not (tmp_path / "out").exists()


def test_cli_misspelt_model_gets_a_suggestion(sample_store, tmp_path):
    result = run_cli("report", "model", "--model", "katanemo/Arch-Router-1.5", "--store", str(sample_store),
                     "--out", str(tmp_path))
    assert result.returncode == 2
    assert "did you mean 'katanemo/Arch-Router-1.5B'?" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["fleet", "--run", "99"], "error: no run 99 in "),
    (["fleet", "--run", "abc"], "error: the run id must be a number, got 'abc'"),
    (["fleet", "--compare", "42"], "error: no run 42 in "),
    (["model", "--model", ARCH, "--run", "99"], "error: no run 99 in "),
])
def test_cli_unknown_run_exits_2(sample_store, tmp_path, args, message):
    kind, *rest = args
    result = run_cli("report", kind, *rest, "--store", str(sample_store), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_missing_store_exits_2(tmp_path):
    result = run_cli("report", "fleet", "--store", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no store at" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["report", "--help"], ["model", "fleet"]),
    (["report", "model", "--help"], ["--model", "--store", "--run", "--out", "--timeout"]),
    (["report", "fleet", "--help"], ["--compare", "--store", "--run", "--out", "--timeout"]),
])
def test_cli_help(args, expected):
    result = run_cli(*args)
    assert result.returncode == 0 and result.stdout.lower().startswith("usage: python -m analysis report")
    assert all(flag in result.stdout for flag in expected)


# --------------------------------------------------------------------------- the kernel


def test_kernel_spec_is_this_interpreter_without_token(tmp_path):
    _write_kernel_spec(tmp_path)
    spec = json.loads((tmp_path / KERNEL_NAME / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    assert spec["env"]["HF_TOKEN"] == "" and kernel_spec_overrides()["env"]["HF_TOKEN"] == ""
    assert "PYTHONPATH" not in spec["env"]  # the package is installed: no path tweak reaches the kernel


def test_kernel_manager_ignores_kernel_specs_on_jupyter_path(tmp_path, monkeypatch):
    """A same-named spec on JUPYTER_PATH (searched first by jupyter_core) cannot hijack the report kernel."""
    decoy = tmp_path / "decoy" / "kernels" / KERNEL_NAME
    decoy.mkdir(parents=True)
    (decoy / "kernel.json").write_text(json.dumps({"argv": ["/bin/false", "{connection_file}"],
                                                   "display_name": "decoy", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "decoy"))
    ours = tmp_path / "ours"
    _write_kernel_spec(ours)
    manager = _pinned_manager_class(ours)(kernel_name=KERNEL_NAME)
    assert manager.kernel_spec.argv[0] == sys.executable
    assert set(manager.kernel_spec_manager.find_kernel_specs()) == {KERNEL_NAME}


def _notebook(folder: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(source) for source in sources)]
    path = folder / "probe.ipynb"
    nbformat.write(nb, path)
    return path


def test_kernel_runs_this_interpreter_and_never_sees_the_token(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET_TOKEN)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no venv "python" to find on PATH
    source = _notebook(tmp_path, "import os, sys\nprint(sys.executable, repr(os.environ.get('HF_TOKEN')), x)",
                       "import analysis\nprint(analysis.__file__)")
    nb = run_notebook(source, tmp_path / "out.ipynb", {"x": 2})
    printed = [o.text.strip() for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.name == "stdout"]
    assert printed == [f"{sys.executable} '' 2", str(Path(rs.__file__).parent.with_name("__init__.py"))]
    assert SECRET_TOKEN not in (tmp_path / "out.ipynb").read_text()


def test_errors_raised_in_a_notebook(tmp_path):
    usage = _notebook(tmp_path, "from analysis.errors import UsageError\nraise UsageError('no run 5 in x')")
    with pytest.raises(UsageError, match="^no run 5 in x$"):
        run_notebook(usage, tmp_path / "usage.ipynb", {})
    broken = _notebook(tmp_path, "raise ValueError('boom')")
    with pytest.raises(NotebookFailed, match="probe.ipynb failed in cell 2: ValueError: boom") as caught:
        run_notebook(broken, tmp_path / "broken.ipynb", {})
    assert caught.value.exit_code == 4
    assert (tmp_path / "broken.ipynb").exists()  # kept: it shows the traceback


# --------------------------------------------------------------------------- sections, without a kernel


@pytest.fixture(scope="module")
def arch(sample_store):
    return rs.model_rca(sample_store, "", ARCH)


def test_resolve_runs(sample_store):
    latest, previous, failed = _runs(sample_store)
    with open_store(sample_store, create=False) as db:
        assert rs.resolve_run(db, "") == rs.resolve_run(db, None) == rs.resolve_run(db, f" {latest} ") == latest
        assert rs.resolve_run(db, failed) == failed  # an explicit run of any status
        assert rs.resolve_compare_run(db, latest, "") == previous
        assert rs.resolve_compare_run(db, latest, str(failed)) == failed
        first_ok = int(db.runs().query("status == 'ok'")["id"].min())
        assert rs.resolve_compare_run(db, first_ok, None) is None  # nothing succeeded before it
        with pytest.raises(UsageError, match="no run 99"):
            rs.resolve_run(db, 99)


def test_reports_never_fall_back_to_the_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("RCA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RCA_STORE", raising=False)
    assert rs.resolve_store("") == str(tmp_path / "home" / "rca.sqlite")
    assert rs.resolve_store("x.sqlite") == "x.sqlite"
    assert rs.resolve_store("postgresql://rca@db/rca") == "postgresql://rca@db/rca"  # a URL stays a URL
    monkeypatch.setenv("RCA_STORE", "postgresql://rca@db/other")
    assert rs.resolve_store("") == "postgresql://rca@db/other"
    monkeypatch.delenv("RCA_STORE")
    with pytest.raises(StoreError, match="demo") as caught:
        rs.fleet_rca(None, None)
    assert "sample.sqlite" in str(caught.value) and caught.value.exit_code == 2
    assert not (tmp_path / "home").exists()  # nothing was built or created


def _one_route_blocked_with_alternatives(findings: pd.DataFrame) -> dict:
    single = findings.groupby("model_id")["provider"].transform("size") == 1
    rows = findings[single & findings["blocked"] & findings["http_status"].notna()
                    & (findings["alternatives"].str.len() > 0)]
    return rows.iloc[0].to_dict()


def test_verdict_for_a_blocked_model(sample_store):
    f = _one_route_blocked_with_alternatives(_latest_findings(sample_store))
    text = rs.verdict(rs.model_rca(sample_store, "", f["model_id"]))
    assert text.startswith(f"{f['model_id']} does not work through our route in run {_runs(sample_store)[0]}: "
                           f"{f['model_string']} is {f['reason']} (HTTP {int(f['http_status'])}")
    assert text.endswith(", so block it.")


def test_verdict_for_a_model_that_works_on_some_routes(sample_store):
    findings = _latest_findings(sample_store)
    mixed = findings.groupby("model_id")["reason"].agg(lambda r: "ok" in set(r) and len(set(r)) > 1)
    model_id = mixed[mixed].index[0]
    text = rs.verdict(rs.model_rca(sample_store, "", model_id))
    assert text.startswith(f"{model_id} works as ") and ", but " in text


def test_recommendations_offer_alternatives_with_the_same_tag(sample_store):
    f = _one_route_blocked_with_alternatives(_latest_findings(sample_store))
    text = rs.model_recommendations(rs.model_rca(sample_store, "", f["model_id"])).markdown()
    assert "Action: **block**" in text
    assert f"User-facing message to return: `{f['message']}`" in text
    assert f"same pipeline tag ({f['pipeline_tag']})" in text
    assert all(f"`{alt}`" in text for alt in f["alternatives"][:3])


def test_route_mismatch_recommends_the_working_route(sample_store):
    with open_store(sample_store, create=False) as db:
        history = db.model_history(ARCH)
    row = history[history["reason"] == "route_mismatch"].iloc[0]
    rca = rs.model_rca(sample_store, int(row["run_id"]), ARCH)
    assert "so fix our route to it instead of blocking it" in rs.verdict(rca)
    text = rs.model_recommendations(rca).markdown()
    assert "Action: **fix route**" in text and f"route users to `{row['working_route']}`" in text


def test_arch_router_sections(arch):
    assert "lists `katanemo/Arch-Router-1.5B`, with providers: hf-inference" in rs.router_listing(arch).markdown()
    attempts = rs.probe_attempts(arch).markdown()
    assert "/v1/chat/completions" in attempts and "curl -sS" in attempts and "$HF_TOKEN" in attempts
    assert "endpoint\\_error" in rs.history_table(arch).markdown()
    assert "Alternatives: none needed, it works." in rs.model_recommendations(arch).markdown()


def test_fleet_on_a_failed_run(sample_store):
    failed = _runs(sample_store)[2]
    fleet = rs.fleet_rca(sample_store, failed, "")
    assert rs.fleet_verdict(fleet) == (f"Run {failed} failed at run level (endpoint_error): nothing from it is "
                                       "blocked or exported.")
    assert "never feeds a blocklist" in rs.blocklist_table(fleet).markdown()
    assert "No earlier successful run" in rs.changes(fleet).markdown()


def test_tag_chart_labels_are_text(sample_store):
    fleet = rs.fleet_rca(sample_store, "", "")
    findings = fleet.view.findings
    failing = findings.index[findings["reason"] != "ok"][0]  # the tag chart shows failing targets
    findings.loc[failing, "pipeline_tag"] = "<b>x</b>"
    labels = {y for d in rs.tag_chart(fleet).figure.data for y in d.y}
    assert "&lt;b&gt;x&lt;/b&gt;" in labels and "<b>x</b>" not in labels


def test_report_charts_use_the_shared_palette(sample_store):
    from analysis.outputs.charts import REASON_COLORS
    from analysis.taxonomy import REASON_NAMES

    assert set(REASON_COLORS) == set(REASON_NAMES)
    assert len(set(REASON_COLORS.values())) == len(REASON_NAMES)  # one colour per reason
    fleet = rs.fleet_rca(sample_store, "", "")
    for figure in (rs.reason_chart(fleet).figure, rs.tag_chart(fleet).figure):
        traces = {d.name: d.marker.color for d in figure.data}
        assert len(traces) > 3 and traces == {r: REASON_COLORS[r] for r in traces}


# --------------------------------------------------------------------------- blocks


def _nbconvert_html(markdown: str) -> str:
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    return markdown2html_mistune(markdown)


@pytest.mark.parametrize("block", [
    Paragraph(HOSTILE_TEXT, Code(HOSTILE_TEXT + " `x` ```"), Strong(HOSTILE_TEXT)),
    BulletList([HOSTILE_TEXT, ["1. ", HOSTILE_TEXT], "# heading?", "- item?"]),
    Table(pd.DataFrame({"a|b": [HOSTILE_TEXT, "x|y\nz"], "n": [1.0, None]})),
    CodeBlock("```\n" + HOSTILE_TEXT + "\n```"),
    Stack([Paragraph("- " + HOSTILE_TEXT), Table(pd.DataFrame({"x": []}), empty=HOSTILE_TEXT)]),
])
def test_blocks_never_emit_markup(block):
    for rendered in (block.html(), _nbconvert_html(block.markdown())):
        for raw in RAW_MARKUP:
            assert raw not in rendered, (raw, rendered)
        assert "<h1" not in rendered and "<ol" not in rendered


def test_a_url_before_a_code_span_cannot_swallow_its_fence():
    """Regression: mistune's bare-URL autolinker ran over the backticks of the code span after it."""
    rendered = _nbconvert_html(Paragraph("see http://x/i.png)", Code("<script>alert(1)</script>")).markdown())
    assert "<script>" not in rendered and "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in rendered


def test_markdown_escaping_round_trips_as_text():
    text = "a_b *c* [d](e) <f> & `g` | $h$ ~i~ \\j"
    rendered = _nbconvert_html(Paragraph(text).markdown())
    assert rendered.strip() == f"<p>{html.escape(text, quote=False)}</p>"
    assert md_escape("x\ny") == "x y"


def test_table_cells():
    table = Table(pd.DataFrame({"v": [True, 3.0, 2.5, None, ["a", "b"], "x" * 400]}))
    assert [row[0] for row in table.rows][:5] == ["yes", "3", "2.5", "", "a, b"]
    assert table.rows[5][0].endswith("…") and len(table.rows[5][0]) == 300


def test_probe_error_recommends_the_settings_that_worked(sample_store):
    rca = rs.model_rca(sample_store, "", "Qwen/Qwen3-0.6B")
    assert "so keep it listed and send it the request settings that worked" in rs.verdict(rca)
    text = rs.model_recommendations(rca).markdown()
    assert "Action: **fix probe**" in text
    assert "Request settings that work: `max_tokens=4096; stream=true`" in text
    assert "answered with a chat completion" in rca.evidences[0]["why"]


def test_provider_mapping_error_says_hf_retests_hourly(sample_store):
    findings = _latest_findings(sample_store)
    model_id = findings[findings["reason"] == "provider_mapping_error"].iloc[0]["model_id"]
    rca = rs.model_rca(sample_store, "", model_id)
    assert "retests a failed mapping every hour" in rs.model_recommendations(rca).markdown()
