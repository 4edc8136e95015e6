"""Exports: contract columns, formula neutralisation, a loadable Python set."""

from __future__ import annotations

import ast
import csv
import io
import json

import pandas as pd

from analysis import __version__
from analysis.outputs.export import Provenance, blocklist_bytes, findings_bytes, neutralise, routes_bytes
from analysis.schema import BLOCKLIST_COLUMNS, FINDING_COLUMNS, Run
from analysis.schema import FINDINGS_EXPORT_COLUMNS as FINDINGS_COLUMNS


def _findings() -> pd.DataFrame:
    rows = [
        {"model_id": "a/ok", "provider": "p", "reason": "ok", "blocked": False, "http_status": 200,
         "pipeline_tag": "text-generation", "detail": "router 200", "message": "fine", "latency_ms": 12.5,
         "attempts": 1, "checked_at": "2026-01-01T00:00:00Z"},
        {"model_id": "=cmd|'/c calc'!A1", "provider": "p", "reason": "not_found", "blocked": True, "http_status": 404,
         "pipeline_tag": "+text", "detail": "-1; @SUM(A1)", "message": "\tTAB", "latency_ms": None, "attempts": 1,
         "checked_at": "2026-01-01T00:00:00Z"},
        {"model_id": 'evil/"quote\\\nnewline', "provider": "p", "reason": "gated", "blocked": True,
         "http_status": 403, "pipeline_tag": None, "detail": "line1\nline2\x00", "message": "m", "latency_ms": 3.0,
         "attempts": 1, "checked_at": "2026-01-01T00:00:00Z"},
    ]
    frame = pd.DataFrame(rows)
    for col in FINDING_COLUMNS:
        if col not in frame:
            frame[col] = None
    frame["predicted"] = False
    frame["carried"] = False
    return frame


def test_findings_csv_columns_in_contract_order():
    data = findings_bytes(_findings(), "csv").decode()
    header = next(csv.reader(io.StringIO(data)))
    assert header[: len(FINDINGS_COLUMNS)] == ["model_id", "provider", "reason", "blocked", "http_status",
                                               "pipeline_tag", "detail", "message", "latency_ms", "attempts",
                                               "checked_at"]


def test_blocklist_csv_has_only_blocked_rows_and_contract_columns():
    data = blocklist_bytes(_findings(), "csv").decode()
    rows = list(csv.DictReader(io.StringIO(data)))
    assert list(rows[0].keys()) == BLOCKLIST_COLUMNS + ["carried"]
    assert {r["carried"] for r in rows} == {"false"}
    assert {r["reason"] for r in rows} == {"not_found", "gated"}


def test_formula_cells_are_neutralised():
    rows = list(csv.DictReader(io.StringIO(blocklist_bytes(_findings(), "csv").decode())))
    bad = next(r for r in rows if r["reason"] == "not_found")
    assert bad["model_id"] == "'=cmd|'/c calc'!A1"
    assert bad["pipeline_tag"] == "'+text"
    assert bad["detail"] == "'-1; @SUM(A1)"
    assert bad["message"] == "'\tTAB"
    for value in ("=1", "+1", "-1", "@x", "\tx", "\rx"):
        assert neutralise(value).startswith("'")
    assert neutralise("plain") == "plain" and neutralise(5) == 5


def test_json_round_trips():
    data = json.loads(blocklist_bytes(_findings(), "json"))
    assert sorted(d["reason"] for d in data) == ["gated", "not_found"]
    assert all(set(d) == set(BLOCKLIST_COLUMNS) | {"carried"} for d in data)


def test_python_set_is_valid_and_exact():
    text = blocklist_bytes(_findings(), "python").decode()
    tree = ast.parse(text)
    assigned = tree.body[0]
    assert assigned.targets[0].id == "UNSUPPORTED_MODELS"
    assert ast.literal_eval(assigned.value) == {"=cmd|'/c calc'!A1", 'evil/"quote\\\nnewline'}
    assert "# gated: line1 line2" in text  # the reason as a comment, on one line
    assert len(text.splitlines()) == 4


def test_python_set_lists_routes_when_the_run_spans_providers():
    frame = _findings()
    frame.loc[2, "provider"] = "q"
    text = blocklist_bytes(frame, "python").decode()
    assert ast.literal_eval(ast.parse(text).body[0].value) == {"=cmd|'/c calc'!A1:p", 'evil/"quote\\\nnewline:q'}


def test_empty_blocklist():
    empty = pd.DataFrame(columns=FINDING_COLUMNS)
    assert blocklist_bytes(empty, "csv").decode() == ",".join(BLOCKLIST_COLUMNS + ["carried"]) + "\n"
    assert json.loads(blocklist_bytes(empty, "json")) == []
    namespace: dict = {}
    exec(blocklist_bytes(empty, "python").decode(), namespace)  # noqa: S102 - our own generated code
    assert namespace["UNSUPPORTED_MODELS"] == set() and isinstance(namespace["UNSUPPORTED_MODELS"], set)


def test_predicted_rows_never_block():
    frame = _findings()
    frame["predicted"] = True
    assert list(csv.DictReader(io.StringIO(blocklist_bytes(frame, "csv").decode()))) == []


def _provenance() -> Provenance:
    run = Run(id=7, source="hub", provider="together", status="ok", finished_at="2026-12-02T10:02:00Z",
              started_at="2026-12-02T10:00:00Z", taxonomy_version=2)
    return Provenance.of_run("blocklist", run)


def test_every_format_says_which_run_it_comes_from():
    provenance = _provenance()
    document = json.loads(blocklist_bytes(_findings(), "json", provenance=provenance))
    assert document["provenance"] == {"kind": "blocklist", "run_id": 7, "source": "hub", "provider": "together",
                                      "generated_at": "2026-12-02T10:02:00Z", "tool_version": __version__,
                                      "taxonomy_version": 2, "tool": "catalog-rca",
                                      "scope": "hub provider=together"}
    assert document["rows"] == json.loads(blocklist_bytes(_findings(), "json"))
    for fmt in ("csv", "python"):
        text = blocklist_bytes(_findings(), fmt, provenance=provenance).decode()
        comment = [line for line in text.splitlines() if line.startswith("# ")]
        assert "# run_id: 7" in comment and "# scope: hub provider=together" in comment
        assert "# taxonomy_version: 2" in comment and f"# tool_version: {__version__}" in comment
        # the rest is the file without provenance, unchanged
        assert text.endswith(blocklist_bytes(_findings(), fmt).decode())
    namespace: dict = {}
    exec(blocklist_bytes(_findings(), "python", provenance=provenance).decode(), namespace)  # noqa: S102
    assert "UNSUPPORTED_MODELS" in namespace


def test_a_hostile_scope_cannot_break_out_of_the_comment():
    provenance = Provenance(kind="routes", run_id=1, source="hub", provider="x\nmodel_id,evil\r\n=cmd",
                            generated_at="t", tool_version="0", taxonomy_version=None)
    text = routes_bytes(pd.DataFrame(), "csv", provenance).decode()
    assert all(line.startswith("# ") for line in text.splitlines()[:7])
    assert text.splitlines()[7].startswith("model_id,")
