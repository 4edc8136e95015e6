"""The column registry: every finding, export and blocklist column is named here once, in contract order.

The store's findings table holds :data:`FINDING_COLUMNS` (its DDL grew by migrations, in
:mod:`analysis.store.sqlite`, and a test checks that they agree); the findings export writes
:data:`FINDINGS_EXPORT_COLUMNS`, then the evidence and history columns; the blocklist export writes
:data:`BLOCKLIST_COLUMNS`, then :data:`BLOCKLIST_EXTRA_COLUMNS`; the fixes export writes :data:`ROUTES_COLUMNS`.
:data:`COLUMN_HELP` says what each one means, for the dashboard and the README.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FINDING_COLUMNS", "HISTORY_COLUMNS", "FINDINGS_EXPORT_COLUMNS", "FINDINGS_EVIDENCE_COLUMNS",
           "FINDINGS_HISTORY_COLUMNS", "BLOCKLIST_COLUMNS", "BLOCKLIST_EXTRA_COLUMNS", "ROUTES_COLUMNS", "COLUMN_HELP",
           "is_missing"]

# What diagnose writes for every target, in order.
FINDING_COLUMNS = [
    "model_id", "provider", "reason", "blocked", "http_status", "pipeline_tag", "detail", "message",
    "latency_ms", "attempts", "checked_at", "model_string", "action", "predicted", "error_code", "note",
    "mapping_status", "mapping_task", "in_router_list", "gated", "working_route", "working_settings",
    "error_signature", "carried",
]
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


def is_missing(value: Any) -> bool:
    """``None``, NaN or pandas' NA: the one test for "no value" across frames, records and cells."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")
