"""Defaults and paths, in one place: :class:`ScanConfig` (every scan setting's default, which the CLI and the
Scan page are built from), the endpoints, and where the tool reads and writes when no path is given.

The data dir is ``--data-dir`` (CLI), else ``RCA_HOME``, else ``./data``: the same for the CLI, the app and the
reports.  It holds the default store (``rca.sqlite``) and the built-in sample (``sample.sqlite``); reports go
to ``$RCA_HOME/reports``, else ``./reports``.  Tests point ``RCA_HOME`` at their temp dir, so no run writes
into the checkout.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from analysis.errors import SettingError

if TYPE_CHECKING:
    from analysis.pipeline.probe import ProbeSettings

__all__ = ["ScanConfig", "SOURCES", "DEFAULT_MAX_TOKENS_RETRY", "validate_url", "PROJECT_ROOT", "NOTEBOOKS",
           "HUB_URL", "ROUTER_URL", "USER_AGENT", "set_data_dir", "data_dir", "default_store", "sample_store",
           "sample_blocklist", "reports_dir", "missing_store_hint"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT_ROOT / "notebooks"  # the design card keeps them at the top level
# The real endpoints stay the defaults: a user with a network and a token scans Hugging Face itself.
HUB_URL = "https://huggingface.co"
ROUTER_URL = "https://router.huggingface.co/v1"
USER_AGENT = "catalog-rca/0.2"

SOURCES = ("hub", "router", "openai", "file")
DEFAULT_MAX_TOKENS_RETRY = 4096  # the budget of the one re-probe of a budget refusal (sent streamed)

_data_dir_flag: Path | None = None


def set_data_dir(path: str | os.PathLike[str] | None) -> None:
    """Set the data dir from ``--data-dir`` (``None`` clears it)."""
    global _data_dir_flag
    _data_dir_flag = Path(path) if path else None


def _home() -> Path | None:
    value = os.environ.get("RCA_HOME", "").strip()
    return Path(value) if value else None


def data_dir() -> Path:
    """``--data-dir``, else ``RCA_HOME``, else ``./data``."""
    return _data_dir_flag or _home() or Path("data")


def default_store() -> Path:
    """The store commands use without ``--store``: ``<data dir>/rca.sqlite``."""
    return data_dir() / "rca.sqlite"


def store_location() -> str:
    """The store without ``--store``: ``RCA_STORE`` (a file or ``postgresql://...``), else the default store."""
    return os.environ.get("RCA_STORE", "").strip() or str(default_store())


def sample_store() -> Path:
    """The built-in offline sample (``demo``, or the app's first start): ``<data dir>/sample.sqlite``."""
    return data_dir() / "sample.sqlite"


def sample_blocklist() -> Path:
    return data_dir() / "sample-blocklist.csv"


def reports_dir() -> Path:
    """Where reports go without ``--out``: ``reports/`` in ``--data-dir`` or ``RCA_HOME``, else ``./reports``."""
    home = _data_dir_flag or _home()
    return home / "reports" if home is not None else Path("reports")


def missing_store_hint(path: str | os.PathLike[str]) -> str:
    """What to say when a command that reads finds no store: commands never fall back to the sample."""
    return (f"no store at {path}: run a scan into it, or pass --store PATH (the offline sample: "
            f"`python -m analysis demo`, then --store {sample_store()})")


# --------------------------------------------------------------------------- scan settings


@dataclass
class ScanConfig:
    """Everything a scan needs.  Only ``token`` is secret; :meth:`public` leaves it out."""

    hub_url: str = HUB_URL
    router_url: str = ROUTER_URL
    provider: str = "hf-inference"
    source: str = "hub"
    catalog_file: str | None = None
    # "suffix": id:provider; "bare": the bare id (the router or gateway chooses the provider);
    # "auto": suffix for the Hub and router catalogs, bare for a file or another gateway's list.
    route: str = "auto"
    # The global ceiling of requests in flight; None: 8 per provider in scope, at most 256 (each provider's own
    # limit, adapted to its answers, decides how much of it that provider uses; analysis.pipeline.ratecontrol).
    concurrency: int | None = None
    rate_pins: dict[str, float] = field(default_factory=dict)  # provider -> fixed requests/s (--rate P=N)
    timeout: float = 30.0
    retries: int = 2
    max_tokens: int = 16
    max_tokens_retry: int = DEFAULT_MAX_TOKENS_RETRY
    backoff: float = 1.0
    retry_after_cap: float = 30.0
    hub_limit: int = 1000
    batch_size: int = 50
    route_checks: int = 2
    canaries: list[str] = field(default_factory=list)
    canary_count: int = 3
    probe: bool = True
    persistent_after: int = 3
    persistent_min_hours: float = 12.0
    fail_on: str | None = None  # "new-blocked"
    # Incremental re-scan: probe only what may have changed, carry the rest (see analysis.pipeline.incremental).
    changed_only: bool = False
    max_age_s: float | None = None  # with changed_only: evidence older than this is probed again (default 24 h)
    # Spending limit of one invocation in USD (see analysis.pipeline.budget); a resume may raise it.
    budget_usd: float | None = None
    token: str | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("token")
        data["token_set"] = bool(self.token)
        return data

    @property
    def uses_suffix(self) -> bool:
        """Whether model strings carry ``:provider``."""
        if self.source == "openai":
            return False
        if self.route == "auto":
            return self.source in ("hub", "router")
        return self.route == "suffix"

    @property
    def scope_provider(self) -> str:
        """The provider recorded on the run (history compares runs of the same source and provider)."""
        if self.source == "openai":
            return "-"
        return self.provider or "all"

    def ceiling(self, providers: int) -> int:
        """The global concurrency for a scope of ``providers`` providers: ``concurrency``, or 8 per provider."""
        from analysis.pipeline.ratecontrol import default_concurrency

        return self.concurrency if self.concurrency is not None else default_concurrency(providers)

    def probe_settings(self, providers: int = 1) -> "ProbeSettings":
        from analysis.pipeline.probe import ProbeSettings  # the network layer, only when a scan runs

        return ProbeSettings(router_url=self.router_url, token=self.token, concurrency=self.ceiling(providers),
                             timeout=self.timeout, retries=self.retries, max_tokens=self.max_tokens,
                             backoff=self.backoff, retry_after_cap=self.retry_after_cap,
                             rate_pins=tuple(sorted(self.rate_pins.items())))

    def validate(self) -> None:
        """Raise :class:`SettingError` (exit 2) naming the first field that is wrong."""
        if self.source not in SOURCES:
            raise SettingError("source", f"must be one of {', '.join(SOURCES)} (got {self.source!r})")
        if self.source == "hub":
            validate_url(self.hub_url, "hub_url")
        validate_url(self.router_url, "router_url")
        if self.source == "file" and not self.catalog_file:
            raise SettingError("catalog_file", "is needed with source 'file' (a JSON or CSV list of model ids)")
        if self.route not in ("auto", "suffix", "bare"):
            raise SettingError("route", f"must be 'auto', 'suffix' or 'bare' (got {self.route!r})")
        if self.hub_limit < 1:
            raise SettingError("hub_limit", f"must be at least 1 (got {self.hub_limit})")
        if self.max_age_s is not None and not self.changed_only:
            raise SettingError("max_age_s", "needs {other} (a full scan probes everything whatever its age)",
                               other="changed_only")
        if self.max_age_s is not None and not 0 <= self.max_age_s < math.inf:
            raise SettingError("max_age_s", f"must be a finite, non-negative duration (got {self.max_age_s})")
        if self.budget_usd is not None and not 0 < self.budget_usd < math.inf:
            raise SettingError("budget_usd", f"must be a finite amount > 0 (got {self.budget_usd})")
        if self.fail_on not in (None, "new-blocked"):
            raise SettingError("fail_on", f"supports 'new-blocked' (got {self.fail_on!r})")
        from analysis.pipeline.targets import parse_provider_spec

        parse_provider_spec(self.provider)
        for name, value, low in (("retries", self.retries, 0), ("max_tokens", self.max_tokens, 1),
                                 ("batch_size", self.batch_size, 1), ("max_tokens_retry", self.max_tokens_retry, 1),
                                 ("route_checks", self.route_checks, 0),
                                 ("persistent_after", self.persistent_after, 1)):
            if value < low:
                raise SettingError(name, f"must be at least {low} (got {value})")
        if self.concurrency is not None and not 1 <= self.concurrency <= 1024:
            raise SettingError("concurrency", f"must be 1 to 1024 (got {self.concurrency})")
        for provider, rate in self.rate_pins.items():
            if not 0 < rate < math.inf:
                raise SettingError("rate_pins", f"{provider}={rate}: a rate is a finite number of requests per "
                                                "second > 0")
        if not 0 < self.timeout < math.inf:
            raise SettingError("timeout", f"must be a finite number of seconds > 0 (got {self.timeout})")
        limits: tuple[tuple[str, float], ...] = (
            ("backoff", self.backoff), ("retry_after_cap", self.retry_after_cap),
            ("persistent_min_hours", self.persistent_min_hours))
        for name, limit in limits:
            if not 0 <= limit < math.inf:  # nan fails both comparisons: it would remove the cap
                raise SettingError(name, f"must be a finite number >= 0 (got {limit})")


def validate_url(url: str, field: str) -> str:
    """Reject anything that is not an absolute http(s) URL with a host (:class:`SettingError` on ``field``)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SettingError(field, f"{url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingError(field, f"{url!r} is not an http(s) URL with a host, e.g. https://huggingface.co")
    if parts.username or parts.password:
        raise SettingError(field, "holds credentials: put them in HF_TOKEN, not in the URL")
    return url
