"""The sections of the model and fleet RCA reports, built from stored evidence.

The notebooks in ``notebooks/`` call these functions, one per cell: a loader
(:func:`model_rca`, :func:`fleet_rca`) reads the store once, and each section
function turns what it read into a display block (:mod:`analysis.reports.render`).
Every number comes from :mod:`analysis.outputs.views`; this module only words and
arranges it, and every sentence is derived from the evidence, never from a guess.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import config
from analysis.errors import UsageError
from analysis.outputs import charts, views
from analysis.outputs.explain import ACTION_TEXT
from analysis.outputs.export import blocklist_frame
from analysis.outputs.overrides import apply_overrides
from analysis.reports.render import (
    Block,
    BulletList,
    Code,
    CodeBlock,
    FigureBlock,
    Paragraph,
    Stack,
    Strong,
    Table,
    cell_text,
)
from analysis.schema import BLOCKLIST_COLUMNS, Run, is_missing
from analysis.store import SUCCESSFUL, Store, open_store
from analysis.taxonomy import BLOCKING, CHAT_PIPELINE_TAGS, RUN_LEVEL, TRANSIENT, reason_info

__all__ = [
    "resolve_store",
    "resolve_run",
    "resolve_compare_run",
    "ModelRca",
    "model_rca",
    "verdict",
    "conclusion",
    "model_header",
    "model_summary",
    "catalog_entry",
    "router_listing",
    "probe_attempts",
    "history_table",
    "model_why",
    "model_recommendations",
    "model_conclusion",
    "FleetRca",
    "fleet_rca",
    "fleet_verdict",
    "fleet_header",
    "fleet_summary",
    "reason_totals",
    "reason_chart",
    "tag_totals",
    "tag_chart",
    "authors_table",
    "changes",
    "blocklist_table",
    "conflicts_table",
    "top_causes_table",
    "recommendations",
]

ERROR_EXCERPT = 200  # characters of an error body shown per attempt



# --------------------------------------------------------------------------- parameters


def resolve_store(store: str | os.PathLike[str] | None) -> str:
    """The store to read: ``store`` itself (a file, or a ``postgresql://`` URL), or ``RCA_STORE``, else the default
    store (``rca.sqlite`` in the data dir) when empty.

    Reports never fall back to the sample: a missing store is a one-line error that names it.
    """
    from analysis.store import store_backend

    location = str(store) if store not in (None, "") else config.store_location()
    return location if store_backend(location) != "sqlite" else str(Path(location))


def store_name(location: str) -> str:
    """How a report names its store: a file's name, or a database URL without its password."""
    from analysis.store import display_location, store_backend

    return Path(location).name if store_backend(location) == "sqlite" else display_location(location)


def _run_number(value: Any, name: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise UsageError(f"the {name} must be a number, got {str(value)[:80]!r}") from None


def resolve_run(store: Store, run_id: Any) -> int:
    """``run_id`` checked against the store; empty means the latest successful run."""
    number = _run_number(run_id, "run id")
    if number is None:
        number = store.latest_run_id()
        if number is None:
            raise UsageError(f"the store {store.path} has no successful run: scan first, or pass a run id")
    store.get_run(number)  # UsageError if there is no such run
    return number


def resolve_compare_run(store: Store, run_id: int, compare_run_id: Any) -> int | None:
    """``compare_run_id`` checked; empty means the previous successful run of the same scope (or ``None``)."""
    number = _run_number(compare_run_id, "compare run id")
    if number is None:
        return store.previous_ok_run(run_id)
    store.get_run(number)
    return number


def _unknown_model(store: Store, run_id: int, model_id: str, known: pd.Series) -> UsageError:
    shown = model_id if len(model_id) <= 120 else model_id[:117] + "..."
    text = f"model {shown!r} has no finding in run {run_id}"
    elsewhere = sorted(set(store.model_history(model_id)["run_id"].astype(int))) if model_id else []
    if elsewhere:
        text += f" (it has findings in run {', '.join(map(str, elsewhere))}: pass that run id)"
    else:
        close = difflib.get_close_matches(model_id, sorted(set(known)), n=1)
        if close:
            text += f"; did you mean {close[0]!r}?"
    return UsageError(text)


# --------------------------------------------------------------------------- wording helpers


def _route(finding: dict[str, Any]) -> str:
    return finding.get("model_string") or finding["model_id"]


def _answer(finding: dict[str, Any]) -> str:
    """What came back, in a few words: ``HTTP 400 model_not_supported`` or ``no HTTP answer``."""
    status = finding.get("http_status")
    if is_missing(status):
        return "no HTTP answer"
    code = finding.get("error_code")
    number: Any = status  # an int, or a float from a frame with missing values
    return f"HTTP {int(number)}" + ("" if is_missing(code) or not code else f" {code}")


def _action(reason: str) -> str:
    return reason_info(reason).action


def _working_route(finding: dict[str, Any]) -> str | None:
    route = finding.get("working_route")
    return None if is_missing(route) or not route else str(route)


def _failure(finding: dict[str, Any]) -> str:
    """``<route> is <reason> (<answer>[; <working route> works])``."""
    works = _working_route(finding)
    return (f"{_route(finding)} is {finding['reason']} ({_answer(finding)}"
            f"{f'; {works} works' if works else ''})")


def _catalog_facts(finding: dict[str, Any], listed: bool | None) -> str:
    tag = finding.get("pipeline_tag")
    provider = finding.get("provider") or "the router's choice"
    status = finding.get("mapping_status") or "unknown"
    task = finding.get("mapping_task") or "unknown"
    listing = ("the router list was not read" if listed is None
               else "the router lists it" if listed else "the router does not list it")
    tag_text = f"pipeline tag {tag}" if tag else "no pipeline tag (which is not evidence of anything)"
    return f"{tag_text}; {provider} mapping {status} (task {task}); {listing}"


def _is_chat_by_catalog(finding: dict[str, Any]) -> bool | None:
    """True or False when the catalog says whether this is a chat model, else ``None``."""
    tag = finding.get("pipeline_tag")
    task = finding.get("mapping_task")
    if task and task != "conversational":
        return False
    if tag:
        return tag in CHAT_PIPELINE_TAGS
    return None


# --------------------------------------------------------------------------- the model report


@dataclass
class ModelRca:
    """What a model report shows: one evidence dict per probed route, plus the model's history."""

    store_path: str  # a file, or a database URL
    run: Run
    model_id: str
    evidences: list[dict[str, Any]]
    history: pd.DataFrame  # views.model_history: every run, failed ones included
    judged: pd.DataFrame  # the model's stored findings across runs (with working routes)
    runs: pd.DataFrame

    @property
    def run_id(self) -> int:
        return int(self.run.id)

    @property
    def findings(self) -> list[dict[str, Any]]:
        return [e["finding"] for e in self.evidences]


def model_rca(store: str | os.PathLike[str] | None, run_id: Any, model_id: str) -> ModelRca:
    """Read everything a model report needs; :class:`UsageError` for an unknown run or model."""
    path = resolve_store(store)
    with open_store(path, readonly=True) as db:
        number = resolve_run(db, run_id)
        findings = db.findings(number)
        providers = findings.loc[findings["model_id"] == model_id, "provider"].tolist()
        if not providers:
            raise _unknown_model(db, number, model_id, findings["model_id"])
        evidences = [views.model_evidence(db, number, model_id, provider) for provider in providers]
        return ModelRca(path, db.get_run(number), model_id, evidences, views.model_history(db, model_id),
                        db.model_history(model_id), db.runs())


def verdict(rca: ModelRca) -> str:
    """The verdict in one sentence, over every route of the model probed in the run."""
    findings = rca.findings
    run = f"run {rca.run_id}"
    if all(f.get("predicted") for f in findings):
        reasons = ", ".join(sorted({f["reason"] for f in findings}))
        return (f"{rca.model_id} is predicted {reasons} from catalog metadata in {run}; no request was sent, "
                "so nothing is blocked.")
    working = [_route(f) for f in findings if f["reason"] == "ok"]
    failing = [f"{_failure(f)}, so {ACTION_TEXT[_action(f['reason'])]}" for f in findings if f["reason"] != "ok"]
    if not failing:
        return f"{rca.model_id} works through our route: {', '.join(working)} answered a chat completion in {run}."
    if not working:
        return f"{rca.model_id} does not work through our route in {run}: {'; '.join(failing)}."
    return f"{rca.model_id} works as {', '.join(working)} in {run}, but {'; '.join(failing)}."


def _decision(rca: ModelRca) -> list[str]:
    sentences = []
    for e in rca.evidences:
        f = e["finding"]
        if f["reason"] == "ok":
            latency = "" if is_missing(f.get("latency_ms")) else f", {cell_text(f['latency_ms'])} ms"
            sentences.append(f"Keep {_route(f)} listed and do not block it: it answered a chat completion "
                             f"({_answer(f)}{latency}) in run {rca.run_id}.")
        else:
            rule = reason_info(f["reason"]).when
            works = _working_route(f)
            sentences.append(f"{_route(f)}: {f['reason']} ({_answer(f)}); the rule that applies is \"{rule}\". "
                             f"Action: {ACTION_TEXT[_action(f['reason'])]}"
                             f"{f', and route it as {works}' if works else ''}.")
    return sentences


def _catalog_sentences(rca: ModelRca) -> list[str]:
    sentences = []
    for e in rca.evidences:
        f = e["finding"]
        chat = _is_chat_by_catalog(f)
        facts = _catalog_facts(f, e.get("in_router_list"))
        if chat is True:
            sentences.append(f"The catalog {'agrees that' if f['reason'] == 'ok' else 'says'} {_route(f)} is a "
                             f"chat model: {facts}.")
        elif chat is False and f["reason"] == "ok":
            sentences.append(f"The catalog does not describe {_route(f)} as a chat model ({facts}), yet it answered "
                             "a chat completion: the answer is the evidence that counts, so it stays listed.")
        elif chat is False:
            sentences.append(f"The catalog does not describe {_route(f)} as a chat model: {facts}.")
        else:
            sentences.append(f"Catalog facts for {_route(f)}: {facts}.")
    return sentences


def _history_sentences(rca: ModelRca) -> list[str]:
    sentences = []
    history = rca.history
    failed = history[(history["run_status"] == "failed") & history["reason"].isin(RUN_LEVEL)]
    messages = dict(zip(rca.runs["id"], rca.runs["failure_message"]))
    for row in failed.drop_duplicates("run_id").to_dict("records"):
        message = messages.get(row["run_id"]) or ""
        sentences.append(f"Run {int(row['run_id'])} failed at run level ({row['reason']}: {message}). That run "
                         f"judged no model and blocked nothing, so it says nothing about {rca.model_id}.")
    judged = rca.judged[rca.judged["run_status"].isin(SUCCESSFUL) & ~rca.judged["predicted"].astype(bool)
                        & ~rca.judged["reason"].isin(RUN_LEVEL)]
    for provider, rows in judged.sort_values("run_id").groupby("provider", sort=True):
        records = [{str(k): v for k, v in r.items()} for r in rows.to_dict("records")]
        runs = ", ".join(f"run {int(r['run_id'])}: {r['reason']} as {_route(r)}" for r in records)
        if rows["reason"].nunique() == 1:
            sentences.append(f"Every successful run agrees for {provider} ({runs}).")
        else:
            sentences.append(f"The verdict for {provider} changed across successful runs ({runs}); "
                             f"run {rca.run_id} is the one this report judges.")
        for r in [r for r in records if r["reason"] == "route_mismatch"]:
            sentences.append(f"In run {int(r['run_id'])} our route {_route(r)} was refused while "
                             f"{_working_route(r) or 'another route'} answered: the route was at fault, not the "
                             "model, so it was not blocked.")
    return sentences


def conclusion(rca: ModelRca) -> list[str]:
    """The conclusion as sentences: the decision, what the catalog says, and what history adds."""
    return _decision(rca) + _catalog_sentences(rca) + _history_sentences(rca)


def model_header(rca: ModelRca) -> Block:
    """Which model, run and store the report is about."""
    run = rca.run
    return Paragraph("Model ", Code(rca.model_id), f" in run {rca.run_id} ({run.source}:{run.provider}, "
                     f"{run.status}, started {run.started_at}), store ", Code(store_name(rca.store_path)), ".")


def model_summary(rca: ModelRca) -> Block:
    """The verdict sentence, in bold."""
    return Paragraph(Strong(verdict(rca)))


def catalog_entry(rca: ModelRca) -> Block:
    """The catalog facts of the model and its mapping status per provider."""
    evidence = rca.evidences[0]
    cat = evidence.get("catalog") or {}
    fields = [("model id", rca.model_id), ("author", cat.get("author")), ("pipeline tag", cat.get("pipeline_tag")),
              ("tags", cat.get("tags") or []), ("library", cat.get("library_name")), ("gated", cat.get("gated")),
              ("downloads", cat.get("downloads")), ("likes", cat.get("likes")), ("created", cat.get("created_at")),
              ("Hub page", evidence["hub_page"])]
    facts = Table(pd.DataFrame(fields, columns=["field", "value"]))
    mappings = evidence["mappings"].assign(
        probed=lambda m: m["provider"].isin([f["provider"] for f in rca.findings]))
    if not cat:
        return Paragraph("The run's catalog snapshot has no entry for this model.")
    return Stack([facts, Paragraph(Strong("Inference provider mappings"), " (status per provider):"),
                  Table(mappings, empty="The catalog maps no inference provider for this model.")])


def router_listing(rca: ModelRca) -> Block:
    """Whether the router's ``/v1/models`` lists the model, and with which providers."""
    evidence = rca.evidences[0]
    listed = evidence.get("in_router_list")
    if listed is True:
        providers = ", ".join(evidence.get("router_providers") or []) or "none named"
        return Paragraph("The router's model list lists ", Code(rca.model_id), f", with providers: {providers}.")
    if listed is False:
        return Paragraph("The router's model list does not list ", Code(rca.model_id),
                         ": no enabled provider serves it through the router.")
    return Paragraph("The router's model list was not read in this run, so it says nothing either way.")


def probe_attempts(rca: ModelRca) -> Block:
    """Every probe attempt (status, latency, error excerpt, URL, model string), then each request as curl."""
    frames = []
    for e in rca.evidences:
        attempts = e["attempts"]
        if attempts.empty:
            continue
        error = [" ".join(str(p) for p in (code, message) if not is_missing(p) and p)
                 for code, message in zip(attempts["error_code"], attempts["error_message"])]
        frames.append(pd.DataFrame({
            "route": e["finding"]["provider"], "kind": attempts["kind"], "attempt": attempts["n"],
            "url": attempts["url"], "model string": attempts["model_string"], "status": attempts["http_status"],
            "outcome": attempts["outcome"], "latency ms": attempts["latency_ms"],
            "error excerpt": [cell_text(text, ERROR_EXCERPT) for text in error],
            "retry after": attempts["retry_after"]}))
    if not frames:
        return Paragraph("No request was sent for this model in this run (a prediction from catalog metadata).")
    blocks: list[Block] = [Table(pd.concat(frames, ignore_index=True))]
    for e in rca.evidences:
        request = e["request"]
        blocks.append(Paragraph(f"Request for {e['finding']['provider']}: POST ", Code(request["url"]),
                                " with model ", Code(request["model_string"]),
                                f" and max_tokens {request['max_tokens']}. To reproduce it:"))
        blocks.append(CodeBlock(e["curl"], "sh"))
    return Stack(blocks)


def history_table(rca: ModelRca) -> Block:
    """The model's verdicts across runs, newest first, including failed runs that judged nothing."""
    columns = {"run_id": "run", "run_started_at": "started", "run_status": "run status", "provider": "provider",
               "reason": "reason", "blocked": "blocked", "http_status": "HTTP status", "model_string": "model string",
               "detail": "detail"}
    return Table(rca.history[list(columns)].rename(columns=columns), empty="No run has judged this model yet.")


def model_why(rca: ModelRca) -> Block:
    """The reason of each route, explained from its evidence (:func:`analysis.outputs.explain.explain`)."""
    if len(rca.evidences) == 1:
        return Paragraph(rca.evidences[0]["why"])
    return BulletList([[Strong(_route(e["finding"])), ": ", e["why"]] for e in rca.evidences])


def model_recommendations(rca: ModelRca) -> Block:
    """Per route: block, fix the route or wait; the user-facing message; up to three working alternatives."""
    blocks: list[Block] = []
    working = [_route(f) for f in rca.findings if f["reason"] == "ok"]
    for f in rca.findings:
        works = _working_route(f) or (working[0] if working else None)
        action = _action(f["reason"])
        items: list[Any] = [["Action: ", Strong(action), f" ({ACTION_TEXT[action]})."],
                            ["User-facing message to return: ", Code(f.get("message") or "")]]
        settings = f.get("working_settings")
        if f["reason"] == "probe_error" and not is_missing(settings) and settings:
            items.append(["Request settings that work: ", Code(str(settings)),
                          " (send them for this model, or set the probe to them)."])
        if f["reason"] == "provider_mapping_error":
            items.append("Hugging Face retests a failed mapping every hour (a live one every 6 hours): scan again "
                         "and the block lifts once the mapping is live and the model answers.")
        if f.get("carried"):
            items.append(["Carried forward: ", str(f.get("note") or "")])
        alternatives = list(f.get("alternatives") or [])[:3]
        tag = f.get("pipeline_tag") or "(none)"
        if f["reason"] == "ok":
            items.append("Alternatives: none needed, it works.")
        elif works:
            items.append(["Alternative: route users to ", Code(works), ", which works in this run."])
        elif alternatives:
            items.append([f"Working alternatives with the same pipeline tag ({tag}): ",
                          *[part for alt in alternatives for part in (Code(alt), " ")]])
        elif f["reason"] in BLOCKING:
            items.append(f"No working model with the same pipeline tag ({tag}) was found in this run.")
        else:
            items.append("Alternatives: not needed, it is not blocked.")
        blocks += [Paragraph(Strong(_route(f))), BulletList(items)]
    return Stack(blocks)


def model_conclusion(rca: ModelRca) -> Block:
    """The conclusion paragraph (:func:`conclusion`)."""
    return Paragraph(" ".join(conclusion(rca)))


# --------------------------------------------------------------------------- the fleet report


@dataclass
class FleetRca:
    """What a fleet report shows: one run, and its changes against a compared run."""

    store_path: str  # a file, or a database URL
    view: views.RunView
    compare_run: Run | None
    diff: pd.DataFrame | None
    overrides: pd.DataFrame

    @property
    def run(self) -> Run:
        return self.view.run

    @property
    def findings(self) -> pd.DataFrame:
        return self.view.findings


def fleet_rca(store: str | os.PathLike[str] | None, run_id: Any, compare_run_id: Any = None) -> FleetRca:
    """Read everything a fleet report needs; :class:`UsageError` for an unknown run."""
    path = resolve_store(store)
    with open_store(path, readonly=True) as db:
        number = resolve_run(db, run_id)
        compare = resolve_compare_run(db, number, compare_run_id)
        view = views.load_run(db, number)
        diff = views.run_diff(db, compare, number) if compare is not None else None
        return FleetRca(path, view, db.get_run(compare) if compare is not None else None, diff, db.overrides())


def fleet_verdict(fleet: FleetRca) -> str:
    """The state of the fleet in one sentence."""
    k = views.kpis(fleet.view)
    if k["status"] not in SUCCESSFUL:
        state = (f"failed at run level ({k['failure_reason']})" if k["status"] == "failed" and k["failure_reason"]
                 else f"is {k['status']}")
        return f"Run {k['run_id']} {state}: nothing from it is blocked or exported."
    partial = ""
    if k["status"] == "partial":
        faulted = ", ".join(f"{p or 'the bare route'} ({f.get('reason')})" for p, f in
                            sorted((fleet.run.faulted or {}).items()))
        partial = (f" The run is partial: {faulted} had a run-level fault, were not judged, and keep their "
                   "blocklist rows from their last successful run.")
    n_conflicts = len(views.conflicts(fleet.findings))
    return (f"Run {k['run_id']}: {k['working']} of {k['targets']} targets ({k['models']} models) work, "
            f"{k['blocked']} are blocked, {k['transient']} failed transiently, {k['route_mismatch']} need a route "
            f"fix, {k['probe_error']} need other request settings, and {n_conflicts} show conflicting "
            f"evidence.{partial}")


def fleet_header(fleet: FleetRca) -> Block:
    """Which run, scope and store the report is about, and what it is compared with."""
    run = fleet.run
    compared = (f"compared with run {fleet.compare_run.id}" if fleet.compare_run
                else "no earlier successful run of the same scope to compare with")
    return Paragraph(f"Run {run.id} ({run.source}:{run.provider}, {run.status}, started "
                     f"{run.started_at}), {compared}; store ", Code(store_name(fleet.store_path)), ".")


def fleet_summary(fleet: FleetRca) -> Block:
    """The verdict sentence and the headline figures."""
    k = views.kpis(fleet.view)
    figures = pd.DataFrame([(name, k[name]) for name in ("targets", "models", "working", "blocked", "transient",
                                                         "route_mismatch", "duration_s")],
                           columns=["figure", "value"])
    blocks: list[Block] = [Paragraph(Strong(fleet_verdict(fleet))), Table(figures)]
    if k["spend"]:
        blocks.append(Paragraph(k["spend"]))
    if fleet.run.failure_message:
        blocks.insert(1, Paragraph("Run-level failure: ", fleet.run.failure_message))
    return Stack(blocks)


def reason_totals(fleet: FleetRca) -> Block:
    """Targets per reason, with whether the reason blocks and what to do."""
    return Table(views.reason_counts(fleet.findings), empty="No findings in this run.")


def _no_chart(fleet: FleetRca) -> Block | None:
    return Paragraph("No findings in this run, so no chart.") if fleet.findings.empty else None


def reason_chart(fleet: FleetRca) -> Any:
    """Bar chart of targets per reason; it carries plotly.js inline, so show it before any other chart."""
    return _no_chart(fleet) or FigureBlock(charts.reason_bar(views.reason_counts(fleet.findings)),
                                           include_plotlyjs=True)


def _tag_counts(fleet: FleetRca) -> pd.DataFrame:
    counts = views.tag_reason_counts(fleet.findings)
    return counts.assign(pipeline_tag=counts["pipeline_tag"].astype(str))


def tag_totals(fleet: FleetRca) -> Block:
    """Targets per pipeline tag (rows) and reason (columns)."""
    counts = _tag_counts(fleet)
    if counts.empty:
        return Paragraph("No findings in this run.")
    wide = counts.pivot_table(index="pipeline_tag", columns="reason", values="count", aggfunc="sum", fill_value=0)
    wide = wide[[r for r in views.reason_counts(fleet.findings)["reason"] if r in wide.columns]]
    wide.insert(0, "total", wide.sum(axis=1))
    return Table(wide.sort_values("total", ascending=False).reset_index())


def tag_chart(fleet: FleetRca) -> Any:
    """Stacked bars of pipeline tag by reason (plotly.js comes from :func:`reason_chart`)."""
    # charts.tag_reason_bar escapes the upstream tags (Plotly reads HTML in labels).
    return _no_chart(fleet) or FigureBlock(charts.tag_reason_bar(_tag_counts(fleet)))


def authors_table(fleet: FleetRca) -> Block:
    """The authors with the most failing targets."""
    return Table(views.failing_authors(fleet.findings), empty="No author has a failing target.")


def changes(fleet: FleetRca) -> Block:
    """Newly blocked, recovered and reason-changed targets against the compared run."""
    if fleet.diff is None or fleet.compare_run is None:
        return Paragraph("No earlier successful run of the same scope to compare with.")
    blocks: list[Block] = [Paragraph(f"From run {fleet.compare_run.id} to run {fleet.run.id}.")]
    for change, title in (("newly_blocked", "Newly blocked"), ("recovered", "Recovered"),
                          ("reason_changed", "Reason changed")):
        rows = fleet.diff[fleet.diff["change"] == change].drop(columns=["change"])
        blocks += [Paragraph(Strong(f"{title}: {len(rows)}")), Table(rows, empty="none")]
    return Stack(blocks)


def blocklist_table(fleet: FleetRca) -> Block:
    """The full blocklist of the run (empty for a run that did not succeed)."""
    if fleet.run.status not in SUCCESSFUL:
        return Paragraph(f"Run {fleet.run.id} is {fleet.run.status}: a run that did not succeed never "
                         "feeds a blocklist.")
    # The same rows and columns as `python -m analysis export blocklist`: operators' overrides applied.
    findings = apply_overrides(fleet.findings, fleet.overrides, datetime.now(timezone.utc))
    frame = blocklist_frame(findings)
    frame = frame[[c for c in [*BLOCKLIST_COLUMNS, "override"] if c in frame.columns]]
    return Stack([Paragraph(f"{len(frame)} blocked targets."), Table(frame, empty="Nothing is blocked.")])


def top_causes_table(fleet: FleetRca) -> Block:
    """The failure causes ranked by error signature: how many models each hit, and an example."""
    return Table(views.top_causes(fleet.findings), empty="No failures in this run.")


def recommendations(fleet: FleetRca) -> Block:
    """What to do with this run, by action: block, fix routes, fix probe settings, wait."""
    f = fleet.findings
    if fleet.run.status not in SUCCESSFUL or f.empty:
        return Paragraph("Nothing to act on from this run: fix the run-level fault it names and scan again.")
    items: list[Any] = []
    blocked = int(f["blocked"].sum())
    if blocked:
        items.append(f"Block the {blocked} blocked targets: python -m analysis export blocklist --out FILE.")
    routes = f[f["reason"] == "route_mismatch"]
    if len(routes):
        items.append(f"Fix the route of {len(routes)} targets: each answers on its working route "
                     f"(e.g. {routes.iloc[0]['model_string']} -> {routes.iloc[0]['working_route']}).")
    probes = f[f["reason"] == "probe_error"]
    if len(probes):
        items.append(f"Send {len(probes)} targets the request settings that worked "
                     f"(e.g. {probes.iloc[0]['model_id']}: {probes.iloc[0]['working_settings']}).")
    transient = int(f["reason"].isin(TRANSIENT).sum())
    if transient:
        items.append(f"Wait for the {transient} transient failures and scan again: alone they never block.")
    return BulletList(items) if items else Paragraph("Every target works: nothing to do.")


def conflicts_table(fleet: FleetRca) -> Block:
    """Models whose evidence disagrees, e.g. mapped ``live`` by the catalog but refused by the router."""
    return Table(views.conflicts(fleet.findings), empty="No conflicting evidence in this run.")
