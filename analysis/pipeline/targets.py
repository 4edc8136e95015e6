"""Targets: what to probe, and the catalog facts about one target's provider.  Pure: no I/O.

A target is a model through one route (``id:provider``, or the bare id when the
router or a gateway chooses).  :func:`build_targets` turns a catalog into
targets, :func:`route_alternatives` lists the other routes a route check tries,
and :func:`mapping_facts` reads a provider's mapping status and task.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.errors import UsageError

__all__ = ["Target", "parse_provider_spec", "excluded_providers", "hub_provider_param", "build_targets",
           "route_alternatives", "mapping_facts"]


@dataclass(frozen=True)
class Target:
    """One thing to probe: a model through one route.

    ``provider`` is empty when the router (or gateway) chooses the provider.
    """

    model_id: str
    provider: str
    model_string: str


def _provider_names(spec: str | None) -> list[str]:
    names = [p.strip() for p in (spec or "").split(",") if p.strip()]
    for name in names:
        bare = name[1:] if name.startswith("-") else name
        if bare == "all" and name == "all":
            continue
        if not bare or not all(c.isalnum() or c in "-_." for c in bare) or bare.startswith("-"):
            raise UsageError(f"invalid provider name {name!r}: use letters, digits and '-', e.g. 'hf-inference' "
                             "(or '-name' after 'all' to leave one out)")
    return names


def parse_provider_spec(spec: str | None) -> list[str] | None:
    """``"together"`` -> ``["together"]``; ``"a,b"`` -> both; ``"all"`` or empty -> ``None`` (every provider).

    ``"all,-novita"`` is every provider but novita (see :func:`excluded_providers`):
    an account that switches one off on purpose leaves it out instead of getting a
    partial run every time.
    """
    names = _provider_names(spec)
    included = [n for n in names if not n.startswith("-")]
    if not included or "all" in included:
        if len(included) > 1:
            raise UsageError(f"--provider {spec!r}: 'all' cannot be combined with other names (use -name to exclude)")
        return None
    if len(included) != len(names):
        raise UsageError(f"--provider {spec!r}: '-name' excludes a provider from 'all' only")
    return included


def excluded_providers(spec: str | None) -> frozenset[str]:
    """The providers ``spec`` leaves out of ``all`` (``"all,-novita"`` -> ``{"novita"}``)."""
    return frozenset(n[1:] for n in _provider_names(spec) if n.startswith("-"))


def hub_provider_param(spec: str | None) -> str:
    """The Hub's ``inference_provider`` value for ``spec``: names, or ``all`` (exclusions are applied locally)."""
    included = parse_provider_spec(spec)
    return "all" if included is None else ",".join(included)


def build_targets(catalog: pd.DataFrame, providers: list[str] | None, route_suffix: bool = True,
                  exclude: frozenset[str] = frozenset()) -> list[Target]:
    """One target per (model, provider) the catalog maps to a selected provider.

    With ``route_suffix`` the model string is ``id:provider``; without, it is the
    bare id and the router (or gateway) chooses.  A model whose mapping lacks
    the provider is not a target; a model with no mapping facts at all is
    probed through the single provider asked for, else as a bare id.
    """
    targets: list[Target] = []
    for model_id, mapping in zip(catalog["model_id"], catalog["mapping"]):
        if providers is not None and mapping and not any(p in mapping for p in providers):
            continue  # mapped, but only to other providers
        if not route_suffix:
            targets.append(Target(model_id, providers[0] if providers and len(providers) == 1 else "", model_id))
            continue
        names = [p for p in (providers if providers is not None else sorted(mapping)) if p in mapping
                 and p not in exclude]
        if exclude and mapping and not names and providers is None:
            continue  # mapped only to excluded providers
        if providers is not None and len(providers) == 1 and not mapping:
            names = providers  # no mapping facts at all (a file, a bare list): probe it as the gateway would
        if not names:
            targets.append(Target(model_id, "", model_id))
        for name in names:
            targets.append(Target(model_id, name, f"{model_id}:{name}"))
    return targets


def route_alternatives(target: Target, mapping: dict[str, dict[str, str]] | None, limit: int) -> list[Target]:
    """Other routes to the same model, in the order to try them.

    First the bare id (the router chooses), unless that is the target's own
    route; then every other provider the catalog maps ``live``.
    """
    routes: list[Target] = []
    if target.model_string != target.model_id:
        routes.append(Target(target.model_id, "", target.model_id))
    for name, item in (mapping or {}).items():
        route = f"{target.model_id}:{name}"
        if item.get("status") == "live" and route != target.model_string:
            routes.append(Target(target.model_id, name, route))
    return routes[:max(0, limit)]


def mapping_facts(mapping: dict[str, dict[str, str]] | None, provider: str) -> tuple[str | None, str | None]:
    """The (status, task) of ``provider`` in ``mapping``; for ``provider == ""`` a summary of all.

    For the router-chooses case the status is ``live`` if any mapping is live,
    and the task is ``conversational`` if any mapping is; otherwise the first seen.
    """
    if not mapping:
        return None, None
    if provider:
        item = mapping.get(provider)
        if item is None:
            return "unmapped", None
        return item.get("status") or None, item.get("task") or None
    statuses = [m.get("status") or "" for m in mapping.values()]
    tasks = [m.get("task") or "" for m in mapping.values()]
    status = "live" if "live" in statuses else (statuses[0] or None)
    task = "conversational" if "conversational" in tasks else (next((t for t in tasks if t), None))
    return status, task
