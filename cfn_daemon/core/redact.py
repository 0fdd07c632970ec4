"""Redaction of secrets in values that are stored or shown (audit entries, alerts).

Two rules, applied to any JSON-like value (dicts, lists, strings):

- **by key name**: the value of a key whose name says it holds a secret (``password``,
  ``api_key``, ``ANTHROPIC_API_KEY``, ``auth_token``, ``private_key`` ...) is replaced
  whole; so is ``value`` next to a ``key`` naming a secret (``config.set``'s shape);
- **by value pattern**: inside any string, well-known credential shapes (``sk-...``,
  ``ghp_...``, ``AKIA...``, ``Bearer ...``, PEM blocks, ``password=...`` assignments)
  and long high-entropy hex or base64 runs are replaced, the rest of the text kept.

Pure: values in, values out (tests/test_redact.py).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

# Words that make a key name secret on their own ...
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "pass", "secret", "secrets", "token",
        "tokens", "auth", "authorization", "credential", "credentials", "cookie", "apikey",
        "privkey", "signature", "otp", "totp", "jwt", "bearer",
    }
)  # fmt: skip
# ... and pairs of adjacent words that do (``api key``, ``private key``).
_SECRET_PAIRS = frozenset(
    {
        ("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"),
        ("signing", "key"), ("key", "material"), ("client", "secret"), ("session", "key"),
        ("encryption", "key"),
    }
)  # fmt: skip
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# (hints, pattern, replacement): the pattern runs only when the lowercased text contains
# one of its hints (a cheap substring test: most strings hold no secret at all); group 1,
# where there is one, is kept (a scheme, a name).
_R = REDACTED
_SECRET_HINTS = ("password", "passwd", "secret", "token", "key", "credential")
_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    # PEM blocks (private keys, certificates with keys): the whole block.
    (
        ("-----begin",),
        re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL),
        _R,
    ),
    # Authorization headers: keep the scheme, hide the credential.
    (("bearer",), re.compile(r"\b((?i:bearer)\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{_R}"),
    (
        ("basic",),
        re.compile(r"(?i)\b(authorization:\s*basic\s+)[A-Za-z0-9+/=]{8,}"),
        rf"\1{_R}",
    ),
    # Vendor token shapes.
    (("sk-",), re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), _R),  # OpenAI, Anthropic (sk-ant-...)
    (
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
        _R,
    ),  # GitHub
    (("github_pat_",), re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), _R),
    (("glpat-", "gldt-"), re.compile(r"\bgl(?:pat|dt)-[A-Za-z0-9_-]{20,}"), _R),  # GitLab
    (("akia", "asia"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), _R),  # AWS key ids
    (("xox",), re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), _R),  # Slack
    (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), _R),  # Google API keys
    # Assignments in text: ``PASSWORD=...``, ``api_key: ...``, ``--token ...``.
    (
        _SECRET_HINTS,
        re.compile(
            r"(?i)((?:password|passwd|secret|token|api[_-]?key|credential)s?"
            r"[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]+"
        ),
        rf"\1{_R}",
    ),
    (
        ("--",),
        re.compile(r"(?i)(--(?:password|secret|token|api-key|apikey)[ =])[^\s\"',;&]+"),
        rf"\1{_R}",
    ),
    # URLs with a password: redis://user:pw@host.
    (("://",), re.compile(r"(://[^/\s:@]*:)[^/\s@]+(?=@)"), rf"\1{_R}"),
)
# Any hint at all (one C-level scan; most strings have none and skip every pattern).
_ANY_HINT = re.compile("|".join(re.escape(h) for hints, _, _ in _PATTERNS for h in hints))
# Runs shorter than this are never taken for random keys.
_RUN_MIN = 40
# A key ending in one of these names where a secret is, not the secret itself.
_NOT_SECRET_SUFFIXES = frozenset({"file", "path", "env", "var", "name", "id", "ttl", "s", "ms"})
# Candidate runs for the entropy check: long hex, long base64 / base64url.
_HEX_RUN = re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{40,}(?![0-9A-Za-z])")
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{40,}={0,2}(?![A-Za-z0-9+/=_-])")
# Random base64 carries ~6 bits a character, prose and paths ~3-4: above this is a key.
_MIN_ENTROPY_BITS = 4.3


@functools.lru_cache(maxsize=4096)  # key names repeat: every request has the same few
def secret_name(name: str) -> bool:
    """True when a key called ``name`` holds a secret (``ANTHROPIC_API_KEY``, ``authToken``,
    ``password_file`` is not one: it names a path, see ``_NOT_SECRET_SUFFIXES``)."""
    words = [w for w in _WORD_SPLIT.split(_CAMEL.sub("_", name).lower()) if w]
    if not words or words[-1] in _NOT_SECRET_SUFFIXES:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def entropy_bits(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _random_run(match: re.Match[str]) -> str:
    run = match.group(0)
    kinds = sum(
        (
            any(c.isdigit() for c in run),
            any(c.islower() for c in run),
            any(c.isupper() for c in run),
        )
    )
    hexy = all(c in "0123456789abcdefABCDEF" for c in run)
    if hexy or (kinds == 3 and entropy_bits(run) >= _MIN_ENTROPY_BITS):
        return REDACTED
    return run


def redact_text(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``[REDACTED]``."""
    lowered = text.lower()
    if _ANY_HINT.search(lowered) is not None:
        for hints, pattern, replacement in _PATTERNS:
            if any(h in lowered for h in hints):
                text = pattern.sub(replacement, text)
    if len(text) < _RUN_MIN:
        return text
    text = _HEX_RUN.sub(_random_run, text)
    return _B64_RUN.sub(_random_run, text)


def redact(value: Any, *, _depth: int = 0) -> Any:
    """A copy of a JSON-like ``value`` with secrets replaced (by key name and by value
    pattern); nesting deeper than 32 levels is cut (bounded recursion)."""
    if _depth > 32:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        # config.set's {"key": "section.name", "value": ...}: the setting's own name
        # (the last part: ``auth.users`` is not a secret, ``x.api_token`` is) decides.
        setting = value.get("key")
        named_secret = isinstance(setting, str) and secret_name(setting.rsplit(".", 1)[-1])
        for k, v in value.items():
            key = str(k)
            if (secret_name(key) and v not in (None, "", [], {})) or (
                named_secret and key == "value"
            ):
                out[key] = REDACTED
            else:
                out[key] = redact(v, _depth=_depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [redact(v, _depth=_depth + 1) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return value
