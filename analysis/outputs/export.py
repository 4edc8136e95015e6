"""Findings and blocklists as CSV, JSON or a Python set.  Pure: frames in, bytes out.

The CLI and the dashboard both call these functions, so a downloaded file is
byte for byte what ``python -m analysis export`` writes.

Every export says where it comes from (:class:`Provenance`): the JSON export is an object
``{"provenance": {...}, "rows": [...]}``; the CSV and Python exports start with ``#`` comment
lines carrying the same fields (read the CSV with ``comment="#"`` in pandas, or skip lines that
start with ``#``).  ``generated_at`` is when the run's verdicts were made (the run's end), so the
same run always exports the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from analysis.schema import (
    BLOCKLIST_COLUMNS,
    BLOCKLIST_EXTRA_COLUMNS,
    FINDINGS_EVIDENCE_COLUMNS,
    FINDINGS_EXPORT_COLUMNS,
    FINDINGS_HISTORY_COLUMNS,
    ROUTES_COLUMNS,
    Run,
    is_missing,
)
from analysis.untrusted import show_controls

__all__ = [
    "BLOCKLIST_COLUMNS",
    "FORMATS",
    "Provenance",
    "neutralise",
    "csv_bytes",
    "blocklist_frame",
    "findings_bytes",
    "blocklist_bytes",
    "routes_frame",
    "routes_bytes",
    "export_bytes",
]

FORMATS = ("csv", "json", "python")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Provenance:
    """Where an export comes from: which run, which scope, judged when, by which tool and rules."""

    kind: str  # findings, blocklist or routes
    run_id: int
    source: str
    provider: str
    generated_at: str  # when the run's verdicts were made (its end; its start while unfinished)
    tool_version: str
    taxonomy_version: int | None
    tool: str = "catalog-rca"

    @property
    def scope(self) -> str:
        return f"{self.source} provider={self.provider}"

    @classmethod
    def of_run(cls, kind: str, run: Run) -> "Provenance":
        from analysis import __version__

        return cls(kind=kind, run_id=run.id, source=run.source or "", provider=run.provider or "",
                   generated_at=run.finished_at or run.started_at or "", tool_version=__version__,
                   taxonomy_version=run.taxonomy_version)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scope"] = self.scope
        return data

    def comment(self) -> bytes:
        """The same fields as ``#`` comment lines (CSV and Python exports); control characters never go raw."""
        fields = self.as_dict()
        return "".join(f"# {name}: {_one_line(fields[name])}\n" for name in
                       ("tool", "tool_version", "kind", "run_id", "scope", "generated_at",
                        "taxonomy_version")).encode("utf-8")


def neutralise(value: Any) -> Any:
    """Prefix ``'`` to a text cell a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _plain(value: Any) -> Any:
    if is_missing(value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    present = [c for c in columns if c in frame.columns]
    return [{c: _plain(v) for c, v in zip(present, row)} for row in frame[present].itertuples(index=False, name=None)]


def csv_bytes(frame: pd.DataFrame, columns: list[str]) -> bytes:
    """Any frame as CSV with formula cells neutralised (the writer behind every CSV export)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for rec in _records(frame, columns):
        row = []
        for c in columns:
            value = rec.get(c)
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (list, tuple)):
                value = "; ".join(str(v) for v in value)
            text = value if isinstance(value, str) else str(value)
            # NUL and escape sequences never go raw into a file a spreadsheet or a terminal opens.
            row.append("" if value is None else neutralise(show_controls(text)))
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def _json(frame: pd.DataFrame, columns: list[str], provenance: Provenance | None = None) -> bytes:
    rows = _records(frame, columns)
    data: Any = rows if provenance is None else {"provenance": provenance.as_dict(), "rows": rows}
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _framed(body: bytes, fmt: str, provenance: Provenance | None) -> bytes:
    """CSV and Python bodies behind the provenance comment (JSON carries it inside)."""
    return body if provenance is None or fmt == "json" else provenance.comment() + body


def _one_line(text: Any) -> str:
    # Control characters could end a comment early (newline) or break the file (NUL).
    return " ".join("".join(c if c.isprintable() else " " for c in str(text or "")).split())


def _python(frame: pd.DataFrame, name: str, per_route: bool) -> bytes:
    """A Python set literal.  A scan of several providers lists ``id:provider`` routes,
    because a model refused by one provider may still work through another."""
    grouped: dict[str, list[str]] = {}
    for rec in _records(frame, ["model_id", "provider", "reason", "detail"]):
        key = f"{rec['model_id']}:{rec['provider']}" if per_route and rec.get("provider") else rec["model_id"]
        grouped.setdefault(key, []).append(f"{rec['reason']}: {rec.get('detail') or ''}")
    if not grouped:
        return f"{name} = set()  # nothing is blocked\n".encode("utf-8")  # "{}" would be a dict
    lines = [f"{name} = {{"]
    for key, reasons in grouped.items():
        # json.dumps gives a valid Python string literal for any id (quotes and
        # backslashes escaped, non-ASCII as \u escapes).
        lines.append(f"    {json.dumps(key, ensure_ascii=True)},  # {_one_line(' | '.join(reasons))}")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _several_providers(findings: pd.DataFrame) -> bool:
    return "provider" in findings.columns and findings["provider"].nunique() > 1


def blocklist_frame(findings: pd.DataFrame, reasons: set[str] | None = None) -> pd.DataFrame:
    """The blocked rows, or, with ``reasons``, the rows whose reason is in that set.

    Predicted verdicts never block.
    """
    if findings.empty:
        return findings.iloc[0:0]
    predicted = findings["predicted"].astype(bool) if "predicted" in findings else False
    if reasons is None:
        mask = findings["blocked"].astype(bool) & ~predicted
    else:
        mask = findings["reason"].isin(sorted(reasons)) & ~predicted
    if "override" in findings:  # an operator's override wins over the reasons chosen (see outputs.overrides)
        said = findings["override"].fillna("").astype(str)
        mask = (mask | said.str.startswith("block:")) & ~said.str.startswith("allow:") & ~predicted
    return findings[mask].sort_values(["model_id", "provider"]).reset_index(drop=True)


def findings_bytes(findings: pd.DataFrame, fmt: str, provenance: Provenance | None = None) -> bytes:
    """All findings: the contract columns in order, then extra evidence columns."""
    columns = FINDINGS_EXPORT_COLUMNS + [c for c in FINDINGS_EVIDENCE_COLUMNS + FINDINGS_HISTORY_COLUMNS
                                         if c in findings.columns]
    frame = findings.sort_values(["model_id", "provider"]) if not findings.empty else findings
    if fmt == "csv":
        return _framed(csv_bytes(frame, columns), fmt, provenance)
    if fmt == "json":
        return _json(frame, columns, provenance)
    if fmt == "python":
        return _framed(_python(blocklist_frame(findings), "UNSUPPORTED_MODELS", _several_providers(findings)), fmt,
                       provenance)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def blocklist_bytes(findings: pd.DataFrame, fmt: str, reasons: set[str] | None = None,
                    provenance: Provenance | None = None) -> bytes:
    """The blocklist (blocked rows only) as CSV, JSON or a Python set."""
    frame = blocklist_frame(findings, reasons)
    # carried: the row comes from the provider's last successful run (its part of this run had a run-level fault)
    columns = BLOCKLIST_COLUMNS + [c for c in BLOCKLIST_EXTRA_COLUMNS if c in frame.columns]
    if fmt == "csv":
        return _framed(csv_bytes(frame, columns), fmt, provenance)
    if fmt == "json":
        return _json(frame, columns, provenance)
    if fmt == "python":
        return _framed(_python(frame, "UNSUPPORTED_MODELS", _several_providers(findings)), fmt, provenance)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def routes_frame(findings: pd.DataFrame) -> pd.DataFrame:
    """The fixes of our own faults, one row per target (``ROUTES_COLUMNS``): a route that works instead of ours
    (``route_mismatch``), or the request settings that work on our route (``probe_error``)."""
    if findings.empty:
        return pd.DataFrame(columns=ROUTES_COLUMNS)
    rows = findings[findings["reason"].isin(["route_mismatch", "probe_error"])]
    frame = pd.DataFrame({
        "model_id": rows["model_id"], "provider": rows["provider"], "reason": rows["reason"],
        "broken_route": rows["model_string"],
        # a probe_error works on our own route, with other request settings
        "working_route": [w if r == "route_mismatch" else s for r, w, s in
                          zip(rows["reason"], rows["working_route"], rows["model_string"])],
        "working_settings": rows["working_settings"] if "working_settings" in rows else None,
        "detail": rows["detail"], "checked_at": rows["checked_at"],
    }, columns=ROUTES_COLUMNS)
    return frame.sort_values(["model_id", "provider"]).reset_index(drop=True)


def _python_routes(frame: pd.DataFrame) -> bytes:
    """``ROUTE_FIXES`` (broken route -> working route) and ``REQUEST_SETTINGS`` (route -> settings that work)."""
    lines = ["ROUTE_FIXES = {"]
    for rec in _records(frame[frame["reason"] == "route_mismatch"], ROUTES_COLUMNS):
        lines.append(f"    {json.dumps(rec['broken_route'], ensure_ascii=True)}: "
                     f"{json.dumps(rec['working_route'], ensure_ascii=True)},")
    lines.append("}")
    lines.append("REQUEST_SETTINGS = {")
    for rec in _records(frame[frame["reason"] == "probe_error"], ROUTES_COLUMNS):
        lines.append(f"    {json.dumps(rec['broken_route'], ensure_ascii=True)}: "
                     f"{json.dumps(rec['working_settings'] or '', ensure_ascii=True)},")
    lines.append("}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def routes_bytes(findings: pd.DataFrame, fmt: str, provenance: Provenance | None = None) -> bytes:
    """The route and request fixes as CSV, JSON or Python dicts: what the gateway team changes instead of
    blocking."""
    frame = routes_frame(findings)
    if fmt == "csv":
        return _framed(csv_bytes(frame, ROUTES_COLUMNS), fmt, provenance)
    if fmt == "json":
        return _json(frame, ROUTES_COLUMNS, provenance)
    if fmt == "python":
        return _framed(_python_routes(frame), fmt, provenance)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def export_bytes(kind: str, findings: pd.DataFrame, fmt: str, reasons: set[str] | None = None,
                 provenance: Provenance | None = None) -> bytes:
    """``kind`` is ``findings``, ``blocklist`` or ``routes``; with ``provenance``, the file says which run it
    comes from."""
    if kind == "findings":
        return findings_bytes(findings, fmt, provenance)
    if kind == "blocklist":
        return blocklist_bytes(findings, fmt, reasons, provenance)
    if kind == "routes":
        return routes_bytes(findings, fmt, provenance)
    raise ValueError(f"unknown export {kind!r}")
