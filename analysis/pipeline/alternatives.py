"""Working alternatives for blocked models.  Pure.

For each blocked model: up to ``k`` ``ok`` models with the same pipeline tag,
ranked by same author or family, then by how close the parameter count is
(read from the id, e.g. ``7B``, ``1.5B``, ``8x7B``), then by downloads.
"""

from __future__ import annotations

import heapq
import math
import re

import pandas as pd

__all__ = ["parameter_count", "family", "suggest_alternatives"]

_PARAMS = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z])", re.IGNORECASE)
_FAMILY_WORDS = ("llama", "qwen", "mistral", "mixtral", "gemma", "phi", "deepseek", "command", "aya", "glm",
                 "hermes", "falcon", "smollm", "ernie", "kimi", "minimax", "granite", "nemotron", "bloom", "gpt")


def parameter_count(model_id: str) -> float | None:
    """Billions of parameters named in the id (``8x7B`` -> 56, ``500M`` -> 0.5), or ``None``."""
    name = model_id.split("/")[-1]
    best = None
    for experts, size, unit in _PARAMS.findall(name):
        value = float(size) * (int(experts) if experts else 1)
        if unit.lower() == "m":
            value /= 1000
        best = value if best is None else max(best, value)
    return best


def family(model_id: str) -> str:
    """A coarse model family (``llama``, ``qwen``...) from the id, else the first name token."""
    name = model_id.split("/")[-1].lower()
    for word in _FAMILY_WORDS:
        if word in name:
            return word
    return re.split(r"[-_.]", name)[0]


def suggest_alternatives(findings: pd.DataFrame, catalog: pd.DataFrame | None = None, k: int = 3) -> list[list[str]]:
    """A list (aligned with ``findings`` rows) of up to ``k`` working model ids per blocked row.

    Rows that are not blocked get an empty list.  ``catalog`` supplies downloads
    when present.
    """
    if findings.empty:
        return []
    downloads: dict[str, float] = {}
    if catalog is not None and not catalog.empty and "downloads" in catalog:
        downloads = {m: (0.0 if pd.isna(d) else float(d)) for m, d in zip(catalog["model_id"], catalog["downloads"])}
    ok = findings[findings["reason"] == "ok"]
    ok_by_tag: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()  # a set, not `in bucket`: that was quadratic in the catalog
    for model_id, tag in zip(ok["model_id"].tolist(), ok["pipeline_tag"].tolist()):
        key = tag if isinstance(tag, str) else ""
        if (key, model_id) not in seen:
            seen.add((key, model_id))
            ok_by_tag.setdefault(key, []).append(model_id)
    # Each candidate's ranking facts once, not once per blocked row (two regexes each), and only for candidates
    # that some blocked row ranks: a run with nothing blocked computes none.
    facts: dict[str, tuple[str, str, float | None, float]] = {}

    def facts_of(m: str) -> tuple[str, str, float | None, float]:
        known = facts.get(m)
        if known is None:
            known = facts[m] = (m.split("/")[0], family(m), parameter_count(m), downloads.get(m, 0.0))
        return known

    result: list[list[str]] = []
    for model_id, tag, blocked in zip(findings["model_id"].tolist(), findings["pipeline_tag"].tolist(),
                                      findings["blocked"].tolist()):
        if not blocked:
            result.append([])
            continue
        candidates = [c for c in ok_by_tag.get(tag if isinstance(tag, str) else "", []) if c != model_id]
        author = model_id.split("/")[0]
        fam = family(model_id)
        size = parameter_count(model_id)

        def rank(candidate: str, author: str = author, fam: str = fam,
                 size: float | None = size) -> tuple[int, float, float]:
            c_author, c_family, other, c_downloads = facts_of(candidate)
            same = 0 if (c_author == author or c_family == fam) else 1
            distance = abs(math.log(other / size)) if (size and other) else math.inf
            return same, distance, -c_downloads

        result.append(heapq.nsmallest(k, candidates, key=rank))  # == sorted(...)[:k], ties included
    return result
