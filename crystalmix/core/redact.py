"""Secrets out of every message we print: API keys, credentials in URLs, Authorization headers, key parameters.

A server may echo a request back in its error body (headers included), and a user may put ``user:pass@`` in
a ``--base-url``: any text that reaches the terminal or a log goes through `redact` first. Known secret values
(the API key a command was given) are replaced wherever they appear; the patterns catch the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_SECRET = 4  # shorter "secrets" would mask ordinary words

_SECRETS: set[str] = set()

_KEY_NAMES = r"api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|secret|password|passwd|sig|signature|key"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@"), rf"\1{MASK}@"),
    # Authorization: Bearer xyz / "authorization": "Basic xyz" / Proxy-Authorization=token
    (re.compile(r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)"
                r"[^\s\"',;}]+"), rf"\1{MASK}"),
    # a bare "Bearer xyz" anywhere
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1{MASK}"),
    # ?api_key=xyz&... in URLs and form bodies
    (re.compile(rf"(?i)([?&;](?:{_KEY_NAMES})=)[^&\s#\"']+"), rf"\1{MASK}"),
    # X-Api-Key: xyz / "api_key": "xyz" (headers and JSON echoed back)
    (re.compile(r"(?i)\b((?:x-)?(?:api[_-]?key|access[_-]?token|auth[_-]?token)[\"']?\s*[:=]\s*[\"']?)"
                r"[A-Za-z0-9._~+/=-]{8,}"), rf"\1{MASK}"),
    # well-known key shapes: OpenAI, Anthropic, Hugging Face, GitHub
    (re.compile(r"\b(?:sk-(?:ant-)?[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,})"), MASK),
)


def register_secret(value: str | None) -> None:
    """Mask `value` in every later `redact` call of this process (called at the CLI edge with the API key)."""
    if value and len(value) >= MIN_SECRET:
        _SECRETS.add(value)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with known secrets (registered, and `secrets`) and anything shaped like a credential masked."""
    known = sorted({s for s in (*_SECRETS, *secrets) if s and len(s) >= MIN_SECRET}, key=len, reverse=True)
    for s in known:
        text = text.replace(s, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text
