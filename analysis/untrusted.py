"""The boundary for untrusted text: everything an upstream sends passes :func:`clean_text` on the way in.

Upstream bodies, headers and catalog fields are hostile until cleaned.  A valid
JSON body may hold a lone surrogate (``"\\udc80"``, half an emoji), which
SQLite, the terminal and every UTF-8 writer refuse; it may hold escape
sequences that retitle a terminal, or echo the token.  :func:`clean_text`

- decodes bytes as UTF-8 with replacement and replaces lone surrogates,
- shows control characters other than tab and newline as visible escapes
  (``\\x1b``), and bidirectional overrides as ``\\u202e``,
- replaces the token (and, for an ``hf_`` token, any fragment of 8 or more of
  its characters) and any ``Bearer <value>`` with ``***``,
- caps the length (after scrubbing, so a cut never leaves half a token).

:func:`clean_id` applies the same rules to an identifier and says whether it
survived unchanged: an id the boundary had to change is skipped, never probed
or stored.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["TEXT_LIMIT", "EXCERPT_LIMIT", "clean_text", "clean_id", "scrub_secrets", "show_controls",
           "terminal_line", "valid_id"]

TEXT_LIMIT = 2000  # characters of one upstream text kept
EXCERPT_LIMIT = 2048  # the one cap for a stored body excerpt: the detail page shows it whole
FRAGMENT = 8  # an hf_ token fragment this long is treated as the token

# C0 controls except tab and newline, DEL, C1 controls, and the bidi/format characters
# that reorder or hide text (U+200E/F, U+202A-E, U+2066-9, U+FEFF mid-text).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n]")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _masked_bearer(match: re.Match[str]) -> str:
    # A function, not the template r"\1***": re parses a template on every call, and this runs on every field
    # of every catalog entry (a fifth of a 6,000-model catalog's normalising).
    return match.group(1) + "***"


def scrub_secrets(text: str, *secrets: str | None) -> str:
    """Replace each non-empty secret (and ``Bearer <value>``) in ``text`` with ``***``.

    For an ``hf_`` token, any run of :data:`FRAGMENT` or more of its characters
    counts: an upstream that echoes the last 20 characters still leaks it.
    """
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "***")
        if secret.startswith("hf_") and len(secret) >= FRAGMENT:
            text = _scrub_fragments(text, secret)
    return _BEARER.sub(_masked_bearer, text)


def _scrub_fragments(text: str, secret: str) -> str:
    covered = bytearray(len(text))
    hit = False
    for i in range(len(secret) - FRAGMENT + 1):
        fragment = secret[i:i + FRAGMENT]
        start = text.find(fragment)
        while start != -1:
            covered[start:start + FRAGMENT] = b"\x01" * FRAGMENT
            hit = True
            start = text.find(fragment, start + 1)
    if not hit:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append("***")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def clean_text(value: Any, *secrets: str | None, limit: int | None = TEXT_LIMIT) -> str:
    """Untrusted ``value`` (bytes, str or anything with a ``str``) made safe to store, show and print."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", errors="replace")
    else:
        text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        text = _SURROGATE.sub("\ufffd", text)
    text = _CONTROL.sub(_visible, text)
    text = scrub_secrets(text, *secrets)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def clean_id(value: Any, *secrets: str | None) -> str | None:
    """``value`` if it is a string the boundary leaves unchanged (no control, surrogate or secret), else ``None``."""
    if not isinstance(value, str) or not value:
        return None
    return value if clean_text(value, *secrets, limit=None) == value and "\n" not in value and "\t" not in value \
        else None


def show_controls(text: str, *, line_breaks: bool = False) -> str:
    """``text`` with control and bidi characters shown as escapes (``\\x1b``); with ``line_breaks``, tab and
    newline too, so the text stays on one line."""
    text = _SURROGATE.sub("\ufffd", text) if not text.isascii() else text
    text = _CONTROL.sub(_visible, text)
    return _LINE_BREAKS.sub(_visible, text) if line_breaks else text


def terminal_line(value: Any) -> str:
    """The one boundary for the terminal: anything printed that may hold upstream text goes through here.

    Every control character is shown escaped (escape sequences cannot retitle the
    terminal or clear it, and ``\\n``/``\\r`` cannot forge a line), so one item
    prints as one line.
    """
    return show_controls(value if isinstance(value, str) else str(value), line_breaks=True)


# A Hub repository id: ``name`` or ``org/name`` of letters, digits, ``-``, ``_`` and ``.`` (96 characters each).
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9._-]{1,96})?")
# A gateway's own id (``--source file|openai``): printable, no white space, at most 256 characters; suffixes
# like ``:together`` or ``:fastest`` and extra slashes are fine.
_GATEWAY_ID = re.compile(r"[^\s]{1,256}")


def valid_id(value: Any, *secrets: str | None, repo_id: bool = True) -> str | None:
    """``value`` when it is an id of its source (a Hub repo id, or a gateway's own) that the untrusted-text
    boundary leaves unchanged; else ``None`` (the caller skips it with a warning)."""
    cleaned = clean_id(value, *secrets)
    if cleaned is None:
        return None
    return cleaned if (_REPO_ID if repo_id else _GATEWAY_ID).fullmatch(cleaned) else None
