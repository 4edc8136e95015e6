"""Exceptions that carry an exit code, and scrubbing of secrets from text."""

from __future__ import annotations

from typing import Callable

__all__ = [
    "RcaError",
    "UsageError",
    "SettingError",
    "CatalogError",
    "CatalogUnavailable",
    "NoBlocklistError",
    "RunBusyError",
    "ScopeBusyError",
    "LeaseLostError",
    "RunLevelError",
    "StoreError",
    "StoreFullError",
    "StoreNotEmptyError",
    "StoreUnavailableError",
    "UnsupportedStoreError",
    "EXIT_OK",
    "EXIT_FAIL_ON",
    "EXIT_USAGE",
    "EXIT_RUN_LEVEL",
    "EXIT_INTERRUPTED",
    "scrub",
    "auth_error",
    "payment_error",
    "retired_error",
]

EXIT_OK = 0
EXIT_FAIL_ON = 1  # the scan worked, but a --fail-on condition holds
EXIT_USAGE = 2  # bad usage or input
EXIT_RUN_LEVEL = 3  # run-level failure: auth_error, payment_required, endpoint_error
EXIT_INTERRUPTED = 130


class RcaError(Exception):
    """Base class: an error with a one-line message and an exit code."""

    exit_code = EXIT_USAGE


class UsageError(RcaError):
    """Bad flags or input: exit 2."""


class SettingError(UsageError):
    """One scan setting is wrong: ``field`` names the :class:`~analysis.config.ScanConfig` field, not a CLI flag,
    so each front end says it in its own words (the CLI as ``--flag``, the Scan page by the field)."""

    def __init__(self, field: str, problem: str, other: str | None = None) -> None:
        # ``problem`` may name another setting as ``{other}``: each front end fills in its own name for it.
        super().__init__(f"{field} {problem.format(other=other)}")
        self.field = field
        self.problem = problem
        self.other = other

    def worded(self, name: Callable[[str], str]) -> str:
        """The message with every setting named by ``name`` (a flag, a form label)."""
        return f"{name(self.field)} {self.problem.format(other=name(self.other) if self.other else '')}"


class StoreError(RcaError):
    """The store file cannot be used (not SQLite, newer schema, unwritable): exit 2."""


class StoreFullError(StoreError):
    """The store's disk (or page limit) is full mid-run: exit 3; the run is left incomplete and resumable."""

    exit_code = EXIT_RUN_LEVEL


class StoreUnavailableError(StoreError):
    """The database server went away while a command used it (restarted, unreachable): an outage, not bad usage,
    so exit 3; a scan's run is left incomplete and resumable."""

    exit_code = EXIT_RUN_LEVEL


class UnsupportedStoreError(StoreError):
    """A store location with a scheme the tool does not speak (only a file path or ``postgresql://``): exit 2."""


class StoreNotEmptyError(StoreError):
    """``store copy`` into a store that already holds rows: exit 2, nothing written (a copy never merges)."""


class CatalogError(RcaError):
    """The catalog request was refused (a 4xx that is not about the token, an empty catalog): exit 2."""


class CatalogUnavailable(CatalogError):
    """The Hub or the router could not deliver the catalog (unreachable, 5xx or 429 after retries, malformed
    pages, a pagination loop): an outage, not bad usage, so exit 3 and nothing is blocked."""

    exit_code = EXIT_RUN_LEVEL


class RunBusyError(RcaError):
    """Another process holds the run (a scan or a resume of it is running): exit 3, nothing touched."""

    exit_code = EXIT_RUN_LEVEL


class ScopeBusyError(RunBusyError):
    """A live scan of an overlapping scope holds the lease: exit 3, nothing touched.

    Carries the holder so that the CLI and the dashboard can say who is running since when.
    """

    def __init__(self, message: str, *, source: str, providers: str, pid: int, host: str, started_at: str,
                 run_id: int | None) -> None:
        super().__init__(message)
        self.source = source
        self.providers = providers
        self.pid = pid
        self.host = host
        self.started_at = started_at
        self.run_id = run_id


class LeaseLostError(RunBusyError):
    """This scan's lease is gone (its heartbeat stopped longer than the TTL and another scan took the scope
    over): exit 3."""


class NoBlocklistError(RcaError):
    """No run can feed the blocklist asked for (none succeeded, the one named did not, or it is too old).

    Exit 3, and nothing is written: a scheduled job must never publish an empty
    blocklist, which would unblock every model.
    """

    exit_code = EXIT_RUN_LEVEL


class RunLevelError(RcaError):
    """A run-level reason from the taxonomy: the scan stops and nothing is blocked (exit 3)."""

    exit_code = EXIT_RUN_LEVEL

    def __init__(self, reason: str, message: str, evidence: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.evidence = evidence


def auth_error(where: str, token_set: bool, evidence: str) -> RunLevelError:
    """The run-level error for a 401 from ``where`` ("the Hub", "the router")."""
    if token_set:
        hint = f"{where} rejected the token (401): check HF_TOKEN"
    else:
        hint = f"{where} needs a token (401) and HF_TOKEN is not set"
    return RunLevelError("auth_error", hint + ". Nothing was blocked.", evidence)


def payment_error(where: str, evidence: str) -> RunLevelError:
    """The run-level error for a 402 (credits exhausted)."""
    return RunLevelError("payment_required", f"{where} says the credits are exhausted (402): check the account's "
                         "billing. Nothing was blocked.", evidence)


def retired_error(url: str, flag: str, evidence: str) -> RunLevelError:
    """The run-level error for a 410: the endpoint is a retired API, not the models."""
    hint = " (the router is https://router.huggingface.co/v1)" if flag == "--router-url" else ""
    return RunLevelError("endpoint_error", f"{url} answers 410 Gone, a retired API: check {flag}{hint}. "
                         "Nothing was blocked.", evidence)


def scrub(text: str, *secrets: str | None) -> str:
    """Replace every non-empty secret in ``text`` with ``***`` (see :func:`analysis.untrusted.scrub_secrets`).

    Also hides any ``Bearer <value>`` so an echoed Authorization header never
    survives, whoever echoed it.
    """
    from analysis.untrusted import scrub_secrets

    return scrub_secrets(text, *secrets)
