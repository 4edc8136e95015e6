"""Incremental re-scans (``scan --changed-only``): which targets to probe again, which verdicts to carry.  Pure.

A target is probed again when its catalog entry changed since the last successful run of the scope (its
``lastModified``, which moves with every commit and so stands for the sha; its mapping status for the
provider; its router listing; its pipeline tag), when its last verdict was transient or not a verdict at all
(run-level, predicted), when it is new, when it is a canary, or when its evidence is older than the maximum age.
For ``--source file`` and ``openai`` the catalog carries no such facts: only age applies.  Every other target
keeps its previous verdict, marked ``carried`` with the time of its own evidence (``checked_at``), so that a
permanent verdict is carried until it is older than the age, and carried rows never add to a failure streak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import pandas as pd

from analysis.pipeline.targets import Target, mapping_facts
from analysis.schema import is_missing
from analysis.taxonomy import RUN_LEVEL, TRANSIENT

__all__ = ["DEFAULT_MAX_AGE_S", "Selection", "select_changed"]

DEFAULT_MAX_AGE_S = 24 * 3600.0  # evidence older than a day is probed again


@dataclass
class Selection:
    """The targets to probe, the rows carried forward, and why each probed target is probed."""

    probe: list[Target]
    carried: pd.DataFrame
    why: dict[str, int] = field(default_factory=dict)  # changed | transient | stale | new | canary -> count

    def describe(self) -> str:
        reasons = ", ".join(f"{count} {name}" for name, count in sorted(self.why.items()) if count)
        return (f"--changed-only: probing {len(self.probe)} targets ({reasons or 'none'}), carrying "
                f"{len(self.carried)} verdicts forward")


# What a catalog says of a model that can change its verdict: lastModified, mapping, router listing, pipeline tag.
Facts = tuple[str | None, dict[str, Any], bool | None, str | None]


def _facts(catalog: pd.DataFrame) -> dict[str, Facts]:
    frame = catalog.reindex(columns=["model_id", "last_modified", "mapping", "in_router_list", "pipeline_tag"])
    return {m: (None if is_missing(lm) else str(lm), mp if isinstance(mp, dict) else {},
                None if is_missing(lst) else bool(lst), None if is_missing(tag) else str(tag))
            for m, lm, mp, lst, tag in frame.itertuples(index=False, name=None)}


def _changed(before: Facts | None, now: Facts | None, provider: str) -> bool:
    if before is None or now is None:
        return True
    last_before, mapping_before, listed_before, tag_before = before
    last_now, mapping_now, listed_now, tag_now = now
    return (last_before != last_now or listed_before != listed_now or tag_before != tag_now
            or mapping_facts(mapping_before, provider) != mapping_facts(mapping_now, provider))


def _age_s(checked_at: Any, now: datetime) -> float:
    if is_missing(checked_at):
        return float("inf")
    try:
        when = datetime.fromisoformat(str(checked_at).replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return (now - when).total_seconds()


def select_changed(targets: Iterable[Target], catalog: pd.DataFrame, previous_catalog: pd.DataFrame | None,
                   previous_findings: pd.DataFrame | None, previous_run_id: int | None, *, now: datetime,
                   max_age_s: float = DEFAULT_MAX_AGE_S, always: Iterable[tuple[str, str]] = (),
                   catalog_facts: bool = True) -> Selection:
    """Split ``targets`` into those to probe again and the previous verdicts to carry.

    ``always``: (model_id, provider) keys that are probed whatever they did (the canaries).
    ``catalog_facts``: False for sources whose catalog has no change facts (only age applies).
    """
    targets = list(targets)
    why = {"changed": 0, "transient": 0, "stale": 0, "new": 0, "canary": 0}
    if previous_findings is None or previous_findings.empty or previous_run_id is None:
        why["new"] = len(targets)
        return Selection(targets, pd.DataFrame(), why)
    before = _facts(previous_catalog) if previous_catalog is not None and catalog_facts else {}
    current = _facts(catalog) if catalog_facts else {}
    rows = {(m, p): i for i, (m, p) in enumerate(zip(previous_findings["model_id"], previous_findings["provider"]))}
    always = set(always)
    probe: list[Target] = []
    keep: list[int] = []
    for target in targets:
        key = (target.model_id, target.provider)
        index = rows.get(key)
        if key in always:
            why["canary"] += 1
        elif index is None:
            why["new"] += 1
        else:
            row = previous_findings.iloc[index]
            predicted = bool(row.get("predicted")) if not is_missing(row.get("predicted")) else False
            if row["reason"] in TRANSIENT or row["reason"] in RUN_LEVEL or predicted:
                why["transient"] += 1
            elif _age_s(row.get("checked_at"), now) > max_age_s:
                why["stale"] += 1
            elif catalog_facts and _changed(before.get(target.model_id), current.get(target.model_id),
                                            target.provider):
                why["changed"] += 1
            else:
                keep.append(index)
                continue
        probe.append(target)
    carried = previous_findings.iloc[keep].copy().reset_index(drop=True)
    if len(carried):
        was_carried = carried["carried"].fillna(False).astype(bool) if "carried" in carried else False
        carried["note"] = [note if old and isinstance(note, str) and note else
                           f"carried from run {previous_run_id} (evidence of {checked}): unchanged in the catalog "
                           "and younger than --max-age, so not probed again (--changed-only)"
                           for old, note, checked in zip(
                               was_carried if not isinstance(was_carried, bool) else [False] * len(carried),
                               carried.get("note", pd.Series([None] * len(carried))), carried["checked_at"])]
        carried["carried"] = True
    return Selection(probe, carried, why)
