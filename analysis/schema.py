"""The typed records and the column registry: every finding, export and blocklist column is named here once, in
contract order.

:class:`Finding` is one verdict; its fields, in order, are :data:`FINDING_COLUMNS`, the columns diagnose writes
and the store's findings table holds (its DDL grew by migrations, in :mod:`analysis.store.migrations`, and a test
checks that they agree).  :class:`Run` is one stored run.  ``Target``, ``Attempt`` and ``ProbeResult`` live with
the code that makes them (:mod:`analysis.pipeline.targets`, :mod:`analysis.pipeline.probe`).  The findings export writes
:data:`FINDINGS_EXPORT_COLUMNS`, then the evidence and history columns; the blocklist export writes
:data:`BLOCKLIST_COLUMNS`, then :data:`BLOCKLIST_EXTRA_COLUMNS`; the fixes export writes :data:`ROUTES_COLUMNS`.
:data:`COLUMN_HELP` says what each one means, for the dashboard and the README.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping

__all__ = ["Finding", "Run", "FINDING_COLUMNS", "HISTORY_COLUMNS", "FINDINGS_EXPORT_COLUMNS",
           "FINDINGS_EVIDENCE_COLUMNS", "FINDINGS_HISTORY_COLUMNS", "BLOCKLIST_COLUMNS", "BLOCKLIST_EXTRA_COLUMNS",
           "ROUTES_COLUMNS", "COLUMN_HELP", "is_missing"]

@dataclass(frozen=True)
class Finding:
    """One target's verdict with its evidence: what diagnose writes for every target, in column order."""

    model_id: str
    provider: str
    reason: str
    blocked: bool
    http_status: int | None
    pipeline_tag: str | None
    detail: str
    message: str
    latency_ms: float | None
    attempts: int
    checked_at: str | None
    model_string: str
    action: str
    predicted: bool = False
    error_code: str | None = None
    note: str = ""
    mapping_status: str | None = None
    mapping_task: str | None = None
    in_router_list: bool | None = None
    gated: str | None = None
    working_route: str | None = None
    working_settings: str | None = None
    error_signature: str | None = None
    carried: bool = False


# What diagnose writes for every target, in order: the fields of Finding.
FINDING_COLUMNS = [f.name for f in fields(Finding)]
# What the history step adds.
HISTORY_COLUMNS = ["first_failed_at", "last_ok_at", "consecutive_failures", "flaps"]

# The findings export: the contract columns, then evidence, then history (each when the frame has it).
FINDINGS_EXPORT_COLUMNS = ["model_id", "provider", "reason", "blocked", "http_status", "pipeline_tag", "detail",
                           "message", "latency_ms", "attempts", "checked_at"]
FINDINGS_EVIDENCE_COLUMNS = ["model_string", "action", "predicted", "error_code", "note", "mapping_status",
                             "in_router_list", "working_route", "working_settings", "error_signature", "carried"]
FINDINGS_HISTORY_COLUMNS = ["alternatives", *HISTORY_COLUMNS, "override"]

# The blocklist export: the contract columns, then the extras.
BLOCKLIST_COLUMNS = ["model_id", "provider", "reason", "http_status", "pipeline_tag", "detail", "message",
                     "checked_at"]
BLOCKLIST_EXTRA_COLUMNS = ["alternatives", "carried", "override"]

# The fixes export (`export routes`).
ROUTES_COLUMNS = ["model_id", "provider", "reason", "broken_route", "working_route", "working_settings", "detail",
                  "checked_at"]

COLUMN_HELP = {
    "model_id": "the model's id in the catalog",
    "provider": "the provider of the route probed (empty: the router chose)",
    "reason": "the one reason of the taxonomy (version 2)",
    "blocked": "whether the blocklist holds it",
    "http_status": "the status of the last answer (empty: no HTTP answer)",
    "detail": "the evidence in one line: what came back, what worked, the catalog facts",
    "message": "what the gateway can tell its users instead of an opaque 502",
    "working_route": "a route that answered when ours was refused (route_mismatch)",
    "working_settings": "the request settings that answered when ours were refused (probe_error)",
    "error_signature": "status, code and message with ids and numbers replaced: one cause, one row",
    "carried": "kept from the provider's last successful run (this run had a run-level fault for it)",
    "override": "an operator's allow or block, with who, when and why",
}


@dataclass(frozen=True)
class Run:
    """One stored run: its scope, status, settings (no token) and counts."""

    id: int
    started_at: str
    status: str  # running | ok | partial | failed | incomplete
    source: str
    provider: str
    finished_at: str | None = None
    failure_reason: str | None = None
    failure_message: str | None = None
    hub_url: str | None = None
    router_url: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    tool_version: str | None = None
    n_targets: int | None = None
    n_probed: int | None = None
    n_ok: int | None = None
    n_blocked: int | None = None
    n_transient: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    duration_s: float | None = None
    mode: str = "probe"  # probe | predict
    canaries: dict[str, list[str]] = field(default_factory=dict)
    pid: int | None = None
    host: str | None = None
    taxonomy_version: int | None = None
    faulted: dict[str, dict[str, str]] = field(default_factory=dict)
    # What the answers cost (summed over the invocations that worked on the run; None before any answer)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    spent_usd: float | None = None
    unpriced_answers: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Run":
        """A run from the store's decoded row (or a record of ``Store.runs()``): missing cells become ``None`` (or
        the field's empty default), numpy scalars plain Python; columns this version does not know are left out."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in row:
                continue
            value = row[f.name]
            if is_missing(value):
                if f.default_factory is not MISSING:  # settings, counts, canaries, faulted: empty, not None
                    continue
                value = None
            elif hasattr(value, "item"):
                value = value.item()
            values[f.name] = value
        return cls(**values)


def is_missing(value: Any) -> bool:
    """``None``, NaN or pandas' NA: the one test for "no value" across frames, records and cells."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")
