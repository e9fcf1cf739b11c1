"""Where a request comes from: this machine only, or another site (by its fetch headers)."""

from __future__ import annotations

import ipaddress
import urllib.parse

from fastapi import Request

__all__ = ["cross_site", "host_name", "is_loopback"]

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, maybe in brackets) is this machine only."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cross_site(request: Request) -> bool:
    """Whether an action comes from another site, by Sec-Fetch-Site, Origin or Referer."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    own = request.headers.get("host", "").lower()
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == "null" or urllib.parse.urlsplit(origin).netloc.lower() != own
    referer = request.headers.get("referer")
    if referer is not None:
        return urllib.parse.urlsplit(referer).netloc.lower() != own
    return False


def host_name(host_header: str) -> str:
    """The host name of a ``Host`` header, without its port or IPv6 brackets."""
    text = host_header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
