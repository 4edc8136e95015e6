"""Error signatures: one cause seen on 40 models is one row.  Pure: no I/O.

``error_signature`` is ``"{status} {code} {normalised message}"`` (at most
:data:`SIGNATURE_LIMIT` characters) where the message has the target's model
string and id, ``org/name`` tokens, quoted values, UUIDs, long hex and numbers
replaced by placeholders.  Backticked identifiers (``max_new_tokens``) and the
``[param=...]`` marker are kept: they name *what* was refused, which is the
cause.  Timeouts and connection errors get fixed signatures, and an answer
that worked has none.
"""

from __future__ import annotations

import re

__all__ = ["SIGNATURE_LIMIT", "TIMEOUT_SIGNATURE", "CONNECTION_SIGNATURE", "error_signature", "normalise_message"]

SIGNATURE_LIMIT = 200
TIMEOUT_SIGNATURE = "timeout: no answer in time"
CONNECTION_SIGNATURE = "connection_error: no HTTP answer"

_BACKTICKED = re.compile(r"`[^`\s]{1,80}`")
_PARAM = re.compile(r"\[param=[^\]]{1,80}\]")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}\b")
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_](?::[\w.-]+)?")
_QUOTED = re.compile(r"'[^'\n]{0,200}'|\"[^\"\n]{0,200}\"")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
_SPACES = re.compile(r"\s+")
_PRIVATE = re.compile("[\ue000-\uf8ff]")


def normalise_message(message: str, *model_names: str) -> str:
    """``message`` with ids, quoted values and numbers replaced, so that it names a cause, not a target."""
    text = _PRIVATE.sub("", message)  # the placeholders below are private-use characters
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        # A private-use character per kept piece: no rule below touches it.
        kept.append(match.group())
        return chr(0xE000 + len(kept) - 1)

    text = _PARAM.sub(keep, text)
    text = _BACKTICKED.sub(keep, text)
    for name in sorted((n for n in model_names if n), key=len, reverse=True):
        text = text.replace(name, "<model>")
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _REPO.sub("<model>", text)
    text = _QUOTED.sub("<value>", text)
    text = _NUMBER.sub("<n>", text)
    text = _PRIVATE.sub(lambda m: kept[ord(m.group()) - 0xE000], text)
    return _SPACES.sub(" ", text).strip()


def error_signature(status: int | None, code: str | None, message: str | None, outcome: str | None,
                    *model_names: str) -> str | None:
    """The signature of one failure, or ``None`` for an answer that worked (or no probe at all)."""
    if outcome in (None, "chat"):
        return None
    if outcome == "timeout":
        return TIMEOUT_SIGNATURE
    if outcome == "connection":
        return CONNECTION_SIGNATURE
    parts = [str(status) if status is not None else "-", code or "-", normalise_message(message or "", *model_names)]
    return " ".join(p for p in parts if p)[:SIGNATURE_LIMIT]
