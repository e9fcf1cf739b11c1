"""Who a request is: a named token, the server's token, a login cookie, or local mode.

The rules it implements are drawn in ``api/auth.py``, whose middleware applies them; this
module knows tokens, the stateless login cookie and its CSRF value, and nothing of routes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Request

from pipetrail.api.origins import host_name, is_loopback
from pipetrail.errors import ConfigError, PipetrailError
from pipetrail.governance.identity import hash_token
from pipetrail.governance.tokens import SERVER_TOKEN_USER
from pipetrail.storage.metadata.governance import Role, TokenRecord, TokenStore

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_S",
    "TOUCH_EVERY_S",
    "AccessPolicy",
    "Identity",
]

SESSION_COOKIE = "pipetrail_session"
CSRF_HEADER = "X-Pipetrail-CSRF"
SESSION_MAX_AGE_S = 7 * 24 * 3600
#: A token's ``last_used_at`` is written at most this often (seconds) by one server.
TOUCH_EVERY_S = 60.0
_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Identity:
    """How a request proves access, and whom it acts as."""

    kind: str  # "bearer" | "cookie" | "local"
    session: str | None = None
    #: The acting user: a named token's name, SERVER_TOKEN_USER, or None (local mode).
    user: str | None = None
    role: Role = "admin"
    token_id: int | None = None


class AccessPolicy:
    """The rules of ``api/auth.py``, as checks on one request; holds the token and the derived key.

    Args:
        token: the server's access token, or None.
        host: the address the server binds.
        tokens: the store of named tokens (the workspace's store); None: the server's token
            only, as before named tokens.
        recheck_s: how long "the store has no tokens" is believed before it is read again.

    Raises:
        ConfigError: ``host`` is not a loopback address, no token is given and the store has
            no named tokens.
    """

    def __init__(
        self,
        token: str | None,
        host: str,
        tokens: TokenStore | None = None,
        *,
        recheck_s: float = 1.0,
    ) -> None:
        token = token.strip() if token else None
        self.tokens = tokens
        self._recheck_s = recheck_s
        self._named: bool | None = None
        self._named_read_at = 0.0
        if not token and not is_loopback(host) and not self.named:
            raise ConfigError(
                f"binding {host!r} exposes the server beyond this machine: set a token "
                "(PIPETRAIL_TOKEN or --token) or create named tokens (pipetrail tokens "
                "create), or bind 127.0.0.1"
            )
        self.token = token or None
        self.host = host
        if self.token is not None:
            self._key = hmac.new(
                self.token.encode(), b"pipetrail session key v1", hashlib.sha256
            ).digest()
        else:
            self._key = secrets.token_bytes(32)
        self._touch_lock = threading.Lock()
        self._touched: dict[int, float] = {}

    @property
    def named(self) -> bool:
        """Whether the store has named tokens (once it has, it keeps them: a revoked token
        stays a row, and the last admin token cannot be revoked)."""
        if self.tokens is None:
            return False
        if self._named:
            return True
        clock = time.monotonic()
        if self._named is None or clock - self._named_read_at >= self._recheck_s:
            self._named = self.tokens.has_tokens()
            self._named_read_at = clock
        return self._named

    @property
    def token_required(self) -> bool:
        """Whether requests must prove they know a token."""
        return self.token is not None or self.named

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison of ``given`` with the server's token."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def _record(self, given: str) -> TokenRecord | None:
        """The named token ``given`` is (active or not), or None."""
        if not given.strip() or not self.named:
            return None
        assert self.tokens is not None  # named says so
        return self.tokens.token_by_hash(hash_token(given.strip()))

    def token_identity(self, given: str, kind: str = "bearer") -> Identity | None:
        """Whom ``given`` lets in: its named token (when active), else the server's token."""
        record = self._record(given)
        if record is not None:
            return _of(record, kind) if record.active else None
        if self.token is not None and self.token_matches(given):
            return Identity(kind, user=SERVER_TOKEN_USER, role="admin")
        return None

    def login(self, given: str) -> str | None:
        """A fresh login cookie value for token ``given``, or None when it lets nobody in."""
        identity = self.token_identity(given)
        if identity is None:
            return None
        if identity.token_id is None:
            return self.new_session()
        return self.new_session(token_hash=hash_token(given.strip()))

    def new_session(self, now: float | None = None, *, token_hash: str | None = None) -> str:
        """A fresh login cookie value: of the server's token, or of the named token whose
        hash is ``token_hash``."""
        issued = str(int(now if now is not None else time.time()))
        nonce = secrets.token_hex(16)
        body = f"{issued}.{nonce}" if token_hash is None else f"{issued}.{token_hash}.{nonce}"
        return f"{body}.{self._mac(body)}"

    def session_valid(self, value: str, now: float | None = None) -> bool:
        """Whether ``value`` is a login cookie this server issued, and not expired."""
        parts = value.split(".")
        if len(parts) not in (3, 4) or not parts[0].isdigit():
            return False
        if len(parts) == 3 and self.token is None:
            return False
        if len(parts) == 4 and not _HASH.match(parts[1]):
            return False
        body, mac = value.rsplit(".", 1)
        if not hmac.compare_digest(mac, self._mac(body)):
            return False
        age = (now if now is not None else time.time()) - int(parts[0])
        return 0 <= age <= SESSION_MAX_AGE_S

    def session_identity(self, value: str) -> Identity | None:
        """Whom a login cookie lets in: nobody once its named token is revoked."""
        if not self.session_valid(value):
            return None
        parts = value.split(".")
        if len(parts) == 3:
            return Identity("cookie", value, user=SERVER_TOKEN_USER, role="admin")
        if not self.named:
            return None
        assert self.tokens is not None
        record = self.tokens.token_by_hash(parts[1])
        if record is None or not record.active:
            return None
        return _of(record, "cookie", value)

    def csrf_token(self, session: str | None) -> str:
        """The CSRF value of a session (or of local mode, for ``session=None``)."""
        return self._mac("csrf:" + (session or "local"))

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def identify(self, request: Request) -> Identity | None:
        """How the request proves access, or None when it does not."""
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and credential.strip() and self.token_required:
            found = self.token_identity(credential)
            if found is not None:
                return found
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            session = self.session_identity(cookie)
            if session is not None:
                return session
        if not self.token_required:
            return Identity("local")
        return None

    def touch(self, identity: Identity) -> None:
        """Note that a named token was used: its ``last_used_at``, at most once a minute."""
        if identity.token_id is None or self.tokens is None:
            return
        clock = time.monotonic()
        with self._touch_lock:
            last = self._touched.get(identity.token_id)
            if last is not None and clock - last < TOUCH_EVERY_S:
                return
            self._touched[identity.token_id] = clock
        try:
            self.tokens.touch_token(identity.token_id)
        except PipetrailError:
            return  # a store that cannot take the note now does not refuse the request

    def csrf_header_valid(self, request: Request, identity: Identity) -> bool:
        given = request.headers.get(CSRF_HEADER, "")
        return bool(given) and hmac.compare_digest(given, self.csrf_token(identity.session))

    def foreign_host(self, request: Request) -> bool:
        """A browser request addressed to a host name that is not this server's (rebinding)."""
        if self.token_required:
            return False
        browser = "sec-fetch-site" in request.headers or "origin" in request.headers
        if not browser:
            return False
        name = host_name(request.headers.get("host", ""))
        return not (is_loopback(name) or name == self.host.strip("[]").lower())


def _of(record: TokenRecord, kind: str, session: str | None = None) -> Identity:
    return Identity(kind, session, user=record.name, role=record.role, token_id=record.id)
