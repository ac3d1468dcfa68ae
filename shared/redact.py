"""Keep secrets out of every file and log line: URL credentials, key-like query values, known keys.

A base URL such as `http://user:pw@host/v1?api_key=K` carries secrets in its userinfo and query
string; a command line that records it (a sidecar's `command`) or a message that prints it must
show `http://***@host/v1?api_key=***` instead. A key that a server echoes back in an answer must
not reach the answer log or a label set either: `redact_secrets` replaces every known secret in
a text. Standard library only, so any module may use it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
MIN_SECRET_CHARS = 6  # a shorter "secret" would mangle ordinary words; real keys are far longer

# a query parameter whose name contains one of these words holds a credential
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "pwd", "auth", "sig", "credential", "session", "code")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def is_secret_name(name: str) -> bool:
    """True for a query-parameter name that holds a credential (api_key, token, X-Amz-Signature, ...)."""
    lowered = unquote(name).lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _redact_query(query: str) -> str:
    parts = []
    for pair in query.split("&"):
        name, eq, _value = pair.partition("=")
        parts.append(f"{name}={MASK}" if eq and is_secret_name(name) else pair)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """`url` with its userinfo and the values of key-like query parameters replaced by ***.

    Why keep the rest: the scheme, host, port and path are what a reader needs to rerun a command.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: mask anything that looks like userinfo
        return re.sub(r"(//)[^/@\s]*@", rf"\1{MASK}@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, _redact_query(parts.query), _redact_query(parts.fragment)))


def url_secrets(url: str | None) -> list[str]:
    """The secret pieces of `url` (user, password, key-like query values), raw and percent-decoded."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [piece for piece in userinfo.split(":") if piece]
        found.append(base64.b64encode(unquote(userinfo).encode("utf-8")).decode("ascii"))  # as a Basic header sends it
    for query in (parts.query, parts.fragment):
        for pair in query.split("&"):
            name, eq, value = pair.partition("=")
            if eq and value and is_secret_name(name):
                found.append(value)
    return sorted({s for piece in found for s in (piece, unquote(piece))}, key=len, reverse=True)


def redact_urls(text: str) -> str:
    """Every URL inside `text` (a command line, an error message) passed through `redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (at least MIN_SECRET_CHARS long) replaced by ***, and its URLs redacted."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return redact_urls(text)
