"""Fetch a provider's catalog and normalise it into a DataFrame.

Network code is confined to the ``fetch_*`` functions; ``normalise_*`` are pure.
Targets (what to probe) are built in :mod:`analysis.pipeline.targets`.

The Hub part uses httpx rather than ``huggingface_hub.HfApi.list_models``:
``HfApi`` reads a token from disk when ``HF_TOKEN`` is unset (our token may come
from ``HF_TOKEN`` only), pads every ``RateLimit`` wait by a second, cannot
detect a ``Link`` loop (it would page forever) and turns the provider mapping
into objects, losing the raw list/dict shape we record as evidence.  We do reuse
its parser for the ``RateLimit`` header, so our reading of it matches the
official client.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Callable, Iterable

import httpx
import pandas as pd
from huggingface_hub.utils import parse_ratelimit_headers

from analysis.config import HUB_URL, ROUTER_URL, USER_AGENT
from analysis.errors import (
    CatalogError,
    CatalogUnavailable,
    UsageError,
    auth_error,
    payment_error,
    retired_error,
    scrub,
)
from analysis.untrusted import clean_id, clean_text, valid_id

__all__ = [
    "HUB_URL",
    "ROUTER_URL",
    "CATALOG_COLUMNS",
    "fetch_hub_models",
    "fetch_router_models",
    "normalise_hub_models",
    "HubNormaliser",
    "normalise_router_models",
    "read_catalog_file",
    "router_pricing",
]


EXPAND_FIELDS = ("pipeline_tag", "tags", "library_name", "gated", "downloads", "likes", "createdAt",
                 "lastModified", "inferenceProviderMapping")

CATALOG_COLUMNS = ["model_id", "author", "pipeline_tag", "tags", "library_name", "gated", "downloads",
                   "likes", "created_at", "last_modified", "mapping", "mapping_shape", "in_router_list",
                   "router_providers"]

MAX_PAGES = 100_000
STALE_PAGES = 3  # pages in a row without a new id: a loop with fresh cursors
MAX_RATE_LIMIT_WAIT = 300.0
FIELD_LIMIT = 500  # characters kept of one catalog string field (tags, task, provider id)


# --------------------------------------------------------------------------- fetching


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = httpx.URL(url)
    return parts.scheme, parts.host, parts.port


def _hub_error(resp: httpx.Response, token: str | None) -> str:
    """The error text of an answer, trimmed, with the token scrubbed (a server may echo it)."""
    try:
        data = resp.json()
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return scrub(data["error"], token)[:300]  # scrub first: a cut could leave half a token
    except ValueError:
        pass
    return scrub(resp.text.strip() or resp.reason_phrase, token)[:200]


def fetch_hub_models(
    hub_url: str,
    provider: str | None,
    token: str | None = None,
    *,
    limit: int = 1000,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    extra_params: dict[str, str] | None = None,
    on_page: Callable[[int, int], None] | None = None,
    on_entries: Callable[[list[dict[str, Any]]], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Page through ``GET {hub}/api/models`` and return the raw entries, de-duplicated by id.

    ``on_entries`` gets each page's new entries as the page arrives (a caller normalises them while the next page
    comes in); ``on_page`` gets (pages read, entries so far).

    The next page comes only from the ``Link: <...>; rel="next"`` header; offsets
    are never used.  A page size below ``limit`` is fine.  A 429 waits as the
    ``RateLimit`` header says (``t=`` seconds) and does not use up a retry.  5xx,
    timeouts, connection errors and malformed pages are retried ``retries`` times.

    Raises :class:`RunLevelError` for 401 (``auth_error``) and 410
    (``endpoint_error``), :class:`CatalogUnavailable` (exit 3) when the Hub
    cannot deliver (unreachable, 5xx or 429 after retries, malformed pages, a
    ``Link`` that loops back or leaves the host) and :class:`CatalogError`
    (exit 2) when it refuses the request (another 4xx).
    """
    params: list[tuple[str, str | int | float | bool | None]] = [("limit", str(limit))]
    if provider:
        params.append(("inference_provider", provider))
    for field in EXPAND_FIELDS:
        params.append(("expand[]", field))
    for key, value in (extra_params or {}).items():
        params.append((key, value))
    url: str | None = f"{hub_url.rstrip('/')}/api/models"
    seen_urls: set[str] = set()
    entries: dict[str, dict[str, Any]] = {}
    pages = 0
    origin = _origin(f"{hub_url.rstrip('/')}/api/models")
    stale, known = 0, 0
    with httpx.Client(headers=_headers(token), timeout=timeout, follow_redirects=True) as client:
        first = True
        while url is not None:
            request_url = str(client.build_request("GET", url, params=params if first else None).url)
            if request_url in seen_urls:
                raise CatalogUnavailable(f"Hub pagination loops: the next-page link of page {pages} points back to a "
                                         "page already read; stopping instead of reading the same models forever")
            seen_urls.add(request_url)
            resp, page = _get_page(client, request_url, token, retries, backoff, sleep, pages + 1)
            pages += 1
            fresh = []
            for entry in page:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"] not in entries:
                    entries[entry["id"]] = entry
                    fresh.append(entry)
            if on_entries is not None:
                on_entries(fresh)
            if on_page is not None:
                on_page(pages, len(entries))
            next_link = resp.links.get("next", {}).get("url")
            url = str(resp.url.join(next_link)) if next_link else None
            if url is not None and _origin(url) != origin:
                raise CatalogUnavailable(f"the Hub's next-page link points to another host ({_origin(url)[1]}); "
                                   "refusing to follow it, and to send the token there")
            stale = stale + 1 if len(entries) == known else 0
            known = len(entries)
            if url is not None and stale >= STALE_PAGES:
                raise CatalogUnavailable(f"Hub pagination loops: {STALE_PAGES} pages in a row added no new model; "
                                   "stopping instead of paging forever")
            first = False
            if pages >= MAX_PAGES:
                raise CatalogUnavailable(f"Hub pagination did not end after {MAX_PAGES} pages")
    return list(entries.values())


def _get_page(client: httpx.Client, url: str, token: str | None, retries: int, backoff: float,
              sleep: Callable[[float], None], page_no: int) -> tuple[httpx.Response, list[Any]]:
    failures = 0
    rate_limit_waits = 0
    last_problem = ""
    while True:
        try:
            resp = client.get(url)
        except httpx.TimeoutException:
            last_problem = "timed out"
            resp = None
        except httpx.TransportError as exc:
            last_problem = f"could not connect ({type(exc).__name__}: {scrub(str(exc), token)})"
            resp = None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # redirect loops, a malformed next link
            raise CatalogUnavailable(f"could not read page {page_no} of the Hub catalog: {type(exc).__name__}: "
                               f"{scrub(str(exc), token)}") from None
        if resp is not None:
            if resp.status_code == 401:
                raise auth_error("the Hub", bool(token), f"hub 401 {_hub_error(resp, token)}")
            if resp.status_code == 410:
                raise retired_error(url.split("?")[0], "--hub-url", f"hub 410 {_hub_error(resp, token)}")
            if resp.status_code == 429:
                info = parse_ratelimit_headers(resp.headers)
                wait = float(info.reset_in_seconds) if info is not None else backoff * 2 ** rate_limit_waits
                rate_limit_waits += 1
                if rate_limit_waits > 20:
                    raise CatalogUnavailable("The Hub kept answering 429 (rate limited) after 20 waits; try again "
                                             "later")
                sleep(min(wait, MAX_RATE_LIMIT_WAIT))
                continue
            if 400 <= resp.status_code < 500:
                raise CatalogError(f"The Hub refused the catalog request with {resp.status_code}: "
                                   f"{_hub_error(resp, token)} (URL {url.split('?')[0]})")
            if resp.status_code >= 500:
                last_problem = f"HTTP {resp.status_code}"
            else:
                try:
                    page = resp.json()
                except ValueError:
                    kind = "an HTML page" if "html" in resp.headers.get("content-type", "") else "malformed JSON"
                    last_problem = f"{kind} with status {resp.status_code}"
                else:
                    if isinstance(page, list):
                        return resp, page
                    last_problem = f"a JSON {type(page).__name__}, not a list of models"
        failures += 1
        if failures > retries:
            raise CatalogUnavailable(f"Could not read page {page_no} of the Hub catalog: {last_problem} "
                               f"(after {failures} attempts; URL {url.split('?')[0]})")
        sleep(min(30.0, backoff * 2 ** (failures - 1)) * (0.5 + random.random()))


def fetch_router_models(router_url: str, token: str | None = None, *, timeout: float = 30.0) -> dict[str, Any]:
    """Read ``GET {router}/models`` (OpenAI-compatible shape) and return its JSON.

    Raises :class:`RunLevelError` on 401/402/410 and :class:`CatalogError` on
    any other failure, which callers may treat as "router list unavailable".
    """
    url = f"{router_url.rstrip('/')}/models"
    try:
        resp = httpx.get(url, headers=_headers(token), timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise CatalogUnavailable(f"Could not read the router model list at {url}: {type(exc).__name__}: "
                           f"{scrub(str(exc), token)}") from None
    if resp.status_code == 401:
        raise auth_error("the router", bool(token), f"router /models 401 {_hub_error(resp, token)}")
    if resp.status_code == 402:
        raise payment_error("the router", f"router /models 402 {_hub_error(resp, token)}")
    if resp.status_code == 410:
        raise retired_error(router_url, "--router-url", f"router /models 410 {_hub_error(resp, token)}")
    if resp.status_code != 200:
        error = CatalogUnavailable if resp.status_code >= 500 or resp.status_code == 429 else CatalogError
        raise error(f"The router model list at {url} answered {resp.status_code}")
    try:
        data = resp.json()
    except ValueError:
        raise CatalogUnavailable(f"The router model list at {url} is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise CatalogUnavailable(f"The router model list at {url} is not an OpenAI-style list")
    return data


# --------------------------------------------------------------------------- normalising


def _field(value: Any, secrets: tuple[str | None, ...]) -> str:
    """A catalog string field through the untrusted-text boundary ("" when absent)."""
    return clean_text(value, *secrets, limit=FIELD_LIMIT) if value else ""


def _normalise_mapping(raw: Any, secrets: tuple[str | None, ...] = ()) -> tuple[dict[str, dict[str, str]], str]:
    """Accept the list shape (``/api/models``) and the dict shape (``/api/models/{id}``).

    A provider name the untrusted-text boundary would change is dropped: it would
    become part of a model string sent to the router.
    """
    if raw is None:
        return {}, "missing"
    if isinstance(raw, list):
        items = [(item.get("provider"), item) for item in raw if isinstance(item, dict)]
        shape = "list"
    elif isinstance(raw, dict):
        items = list(raw.items())
        shape = "dict"
    else:
        return {}, "missing"
    result: dict[str, dict[str, str]] = {}
    for provider, item in items:
        name = clean_id(provider, *secrets)
        if name is not None and isinstance(item, dict):
            result[name] = {key: _field(item.get(key), secrets) for key in ("status", "task", "providerId")}
    return result, shape


def _gated(value: Any) -> str:
    if value in (None, False, "false", "False", ""):
        return "false"
    if value is True:
        return "true"
    return str(value)


def _optional_field(value: Any, secrets: tuple[str | None, ...]) -> str | None:
    return clean_text(value, *secrets, limit=FIELD_LIMIT) if isinstance(value, str) else None


def normalise_hub_models(entries: Iterable[dict[str, Any]], token: str | None = None, *,
                         repo_ids: bool = True) -> pd.DataFrame:
    """Turn raw ``/api/models`` entries into the catalog frame (``CATALOG_COLUMNS``).

    Every string passes the untrusted-text boundary.  An id that the boundary
    would change (a control character, a lone surrogate, the token) is skipped,
    never probed or stored, and so is one that is not a Hub repo id (``repo_ids=False``
    accepts a gateway's own ids, suffixes included); the skipped count is in
    ``frame.attrs["skipped_ids"]``.
    """
    normaliser = HubNormaliser(token, repo_ids=repo_ids)
    normaliser.add(entries)
    return normaliser.frame()


class HubNormaliser:
    """:func:`normalise_hub_models` a page at a time: :meth:`add` each page's entries, then take the :meth:`frame`.
    The first entry of an id wins."""

    def __init__(self, token: str | None = None, *, repo_ids: bool = True) -> None:
        self.token = token
        self.repo_ids = repo_ids
        self.rows: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.skipped = 0

    def add(self, entries: Iterable[dict[str, Any]]) -> None:
        token, secrets = self.token, (self.token,)
        for entry in entries:
            raw_id = entry.get("id") if isinstance(entry, dict) else None
            model_id = valid_id(raw_id, token, repo_id=self.repo_ids)
            if model_id is None:
                self.skipped += isinstance(raw_id, str)
                continue
            if model_id in self.seen:
                continue
            self.seen.add(model_id)
            mapping, shape = _normalise_mapping(entry.get("inferenceProviderMapping"), secrets)
            tags = entry.get("tags")
            self.rows.append({
                "model_id": model_id,
                "author": model_id.split("/")[0] if "/" in model_id else "",
                "pipeline_tag": _optional_field(entry.get("pipeline_tag"), secrets),
                "tags": [clean_text(t, token, limit=FIELD_LIMIT) for t in tags] if isinstance(tags, list) else [],
                "library_name": _optional_field(entry.get("library_name"), secrets),
                "gated": _field(_gated(entry.get("gated")), secrets),
                "downloads": _int_or_none(entry.get("downloads")),
                "likes": _int_or_none(entry.get("likes")),
                "created_at": _optional_field(entry.get("createdAt"), secrets),
                "last_modified": _optional_field(entry.get("lastModified"), secrets),
                "mapping": mapping,
                "mapping_shape": shape,
                "in_router_list": None,
                "router_providers": [],
            })

    def frame(self) -> pd.DataFrame:
        return _catalog_frame(self.rows, self.skipped)


def normalise_router_models(data: dict[str, Any], token: str | None = None, *, repo_ids: bool = True) -> pd.DataFrame:
    """Turn an OpenAI-style ``/models`` answer into a catalog frame (ids, providers, listed).

    Strings pass the untrusted-text boundary; an id it would change is skipped.
    """
    rows = []
    skipped = 0
    seen: set[str] = set()
    for item in data.get("data", []):
        model_id = valid_id(item.get("id"), token, repo_id=repo_ids) if isinstance(item, dict) else None
        if model_id is None:
            skipped += isinstance(item, dict) and isinstance(item.get("id"), str)
            continue
        if model_id in seen:
            continue
        seen.add(model_id)
        providers = item.get("providers") if isinstance(item.get("providers"), list) else []
        mapping = {name: {"status": _field(p.get("status"), (token,)), "task": "", "providerId": ""}
                   for p in providers if isinstance(p, dict)
                   for name in [clean_id(p.get("provider"), token)] if name is not None}
        rows.append({
            "model_id": model_id, "author": model_id.split("/")[0] if "/" in model_id else "",
            "pipeline_tag": None, "tags": [], "library_name": None, "gated": "false",
            "downloads": None, "likes": None, "created_at": None, "last_modified": None,
            "mapping": mapping, "mapping_shape": "router" if providers else "missing",
            "in_router_list": True, "router_providers": sorted(mapping),
        })
    return _catalog_frame(rows, skipped)


def router_pricing(router_data: dict[str, Any] | None) -> dict[tuple[str, str], tuple[float, float]]:
    """``(model_id, provider) -> (input, output)`` prices from the router's ``/models``, in USD per million tokens
    (the unit Hugging Face's own playground reads them in)."""
    prices: dict[tuple[str, str], tuple[float, float]] = {}
    for item in (router_data or {}).get("data", []):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        providers: list[Any] = item["providers"] if isinstance(item.get("providers"), list) else []
        for p in providers:
            pricing = p.get("pricing") if isinstance(p, dict) else None
            if isinstance(pricing, dict) and isinstance(p.get("provider"), str):
                try:
                    prices[(item["id"], p["provider"])] = (float(pricing["input"]), float(pricing["output"]))
                except (KeyError, TypeError, ValueError):
                    continue
    return prices


def attach_router_list(catalog: pd.DataFrame, router_data: dict[str, Any] | None) -> pd.DataFrame:
    """Record for each catalog model whether the router lists it (``None`` when unknown).  The router's prices
    are :func:`router_pricing`'s, kept apart from the frame: pandas deep-copies ``attrs`` on every operation."""
    out = catalog.copy()
    if router_data is None:
        out["in_router_list"] = pd.Series([None] * len(out), index=out.index, dtype=object)
        out["router_providers"] = [[] for _ in range(len(out))]
        return out
    listed: dict[str, list[str]] = {}
    for item in router_data.get("data", []):
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            providers: list[Any] = item["providers"] if isinstance(item.get("providers"), list) else []
            listed[item["id"]] = sorted(str(p.get("provider")) for p in providers
                                        if isinstance(p, dict) and p.get("provider"))
    out["in_router_list"] = pd.Series([mid in listed for mid in out["model_id"]], index=out.index, dtype=object)
    out["router_providers"] = [listed.get(mid, []) for mid in out["model_id"]]
    return out


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _catalog_frame(rows: list[dict[str, Any]], skipped_ids: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    frame["in_router_list"] = frame["in_router_list"].astype(object)
    frame.attrs["skipped_ids"] = skipped_ids
    return frame


def read_catalog_file(path: str) -> pd.DataFrame:
    """A catalog from a file of model ids (``--source file``).

    JSON: a list of ids, a list of objects with ``id`` (or ``model_id``) and
    optional Hub fields, or an OpenAI-style ``{"data": [...]}``.  CSV: a
    ``model_id`` or ``id`` column, else the first column.  Raises
    :class:`UsageError` for an unreadable or malformed file.
    """
    import csv

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read catalog file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM (spreadsheet exports add one) is not part of the first id
    except UnicodeDecodeError:
        raise UsageError(f"catalog file {path} is not UTF-8 JSON/CSV (binary, or another encoding such as "
                         "Latin-1): save it as UTF-8") from None
    if "\x00" in text:
        raise UsageError(f"catalog file {path} is not UTF-8 JSON/CSV (it holds NUL bytes)")
    entries: list[dict[str, Any]] = []
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"catalog file {path} is not valid JSON: {exc}") from None
        except RecursionError:
            raise UsageError(f"catalog file {path} is nested too deeply to be a list of model ids") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UsageError(f"catalog file {path}: expected a JSON list of model ids or objects")
        for item in data:
            if isinstance(item, str):
                entries.append({"id": item})
            elif isinstance(item, dict) and isinstance(item.get("id") or item.get("model_id"), str):
                entries.append({**item, "id": item.get("id") or item.get("model_id")})
    else:
        rows = list(csv.reader(text.splitlines()))
        if rows:
            header = [h.strip().lower() for h in rows[0]]
            column = (header.index("model_id") if "model_id" in header
                      else header.index("id") if "id" in header else None)
            body = rows[1:] if column is not None else rows
            column = column or 0
            entries = [{"id": r[column].strip()} for r in body if len(r) > column and r[column].strip()]
    catalog = normalise_hub_models(entries, repo_ids=False)
    if catalog.empty:
        raise UsageError(f"catalog file {path} lists no model ids")
    return catalog
