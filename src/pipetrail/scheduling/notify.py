"""Notifiers that deliver one alert, once, to a webhook, a Slack-compatible hook or SMTP."""

from __future__ import annotations

import base64
import difflib
import functools
import http.client
import json
import math
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pipetrail.errors import ConfigError, PipetrailError

__all__ = [
    "DEFAULT_TIMEOUT",
    "EVENTS",
    "KINDS",
    "Alert",
    "EmailNotifier",
    "Notifier",
    "NotifyError",
    "SlackNotifier",
    "WebhookNotifier",
    "build_notifiers",
    "pipeline_link",
    "run_link",
]

#: Every event an alert can carry. ``start_failed``: a trigger's tick could not start a run.
EVENTS = ("sla_missed", "run_failed", "run_recovered", "start_failed")
#: Every kind of notifier ``build_notifiers`` knows.
KINDS = ("webhook", "slack", "email")
#: Seconds one delivery attempt may wait on each network operation.
DEFAULT_TIMEOUT = 10.0

_TITLES = {
    "sla_missed": "SLA missed",
    "run_failed": "Run failed",
    "run_recovered": "Run recovered",
    "start_failed": "Start failed",
}
_EMOJI = {
    "sla_missed": ":alarm_clock:",
    "run_failed": ":x:",
    "run_recovered": ":white_check_mark:",
    "start_failed": ":warning:",
}
_COMMON_KEYS = ("kind", "name", "events", "pipelines", "timeout")
_KEYS = {
    "webhook": (*_COMMON_KEYS, "url", "headers"),
    "slack": (*_COMMON_KEYS, "url"),
    "email": (
        *_COMMON_KEYS,
        *("host", "port", "from", "to", "starttls", "ssl", "username", "password_env"),
    ),
}


@dataclass(frozen=True)
class Alert:
    """One thing that happened and that someone should hear about.

    Attributes:
        event: one of ``EVENTS``.
        pipeline: the pipeline's name.
        run: the run's pathspec (``"train/42"``); None when no run started.
        status: the run's status when the event happened.
        trigger: the trigger's name when a trigger started the run.
        message: one line for humans: what happened.
        link: the dashboard page of the run (or of the trigger).
        at: when the event happened (aware).
    """

    event: str
    pipeline: str
    run: str | None
    status: str | None
    trigger: str | None
    message: str
    link: str | None
    at: datetime

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown alert event {self.event!r}; expected one of {EVENTS}")
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError(f"alert time {self.at.isoformat()!r} has no time zone")

    @property
    def title(self) -> str:
        """``"SLA missed: train/42"``: the event and what it is about."""
        return f"{_TITLES[self.event]}: {self.run or self.pipeline}"

    def to_json(self) -> dict[str, Any]:
        """The webhook body: every field, ``at`` in ISO 8601, and ``"source": "pipetrail"``."""
        return {
            "source": "pipetrail",
            "event": self.event,
            "pipeline": self.pipeline,
            "run": self.run,
            "status": self.status,
            "trigger": self.trigger,
            "message": self.message,
            "link": self.link,
            "at": self.at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alert:
        """The alert ``to_json`` wrote (an outbox row back into an alert).

        Raises:
            ValueError: a missing field, an unknown event or a time without a zone.
        """
        try:
            return cls(
                event=data["event"],
                pipeline=data["pipeline"],
                run=data.get("run"),
                status=data.get("status"),
                trigger=data.get("trigger"),
                message=data.get("message") or "",
                link=data.get("link"),
                at=datetime.fromisoformat(data["at"]),
            )
        except KeyError as exc:
            raise ValueError(f"alert JSON lacks the field {exc.args[0]!r}") from None


class NotifyError(PipetrailError):
    """One delivery attempt failed; the message names the notifier and why.

    Attributes:
        notifier: the notifier's name.
        retryable: False when trying again cannot help (a 4xx answer, a refused recipient,
            rejected credentials); the outbox may then give up early.
    """

    def __init__(self, message: str, *, notifier: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.notifier = notifier
        self.retryable = retryable


@runtime_checkable
class Notifier(Protocol):
    """Delivers alerts to one configured receiver.

    ``name`` and ``kind`` are read-only, so frozen notifiers (and plain attributes) match.
    """

    @property
    def name(self) -> str:
        """Unique in its configured list; ``f"{kind}-{index}"`` (1-based) unless set."""
        ...

    @property
    def kind(self) -> str:
        """``webhook``, ``slack`` or ``email``."""
        ...

    def wants(self, alert: Alert) -> bool:
        """Whether this notifier's ``events`` and ``pipelines`` filters let ``alert`` through."""
        ...

    def deliver(self, alert: Alert) -> None:
        """Make one attempt, bounded by the notifier's timeout.

        Raises:
            NotifyError: the receiver is down, slow, or refused the alert.
        """
        ...


@dataclass(frozen=True, kw_only=True)
class _Filtered:
    name: str
    events: frozenset[str] | None = None
    pipelines: frozenset[str] | None = None
    timeout: float = DEFAULT_TIMEOUT

    def wants(self, alert: Alert) -> bool:
        """Whether the ``events`` and ``pipelines`` filters (None = all) let ``alert`` through."""
        return (self.events is None or alert.event in self.events) and (
            self.pipelines is None or alert.pipeline in self.pipelines
        )

    def _fail(self, why: str, *, retryable: bool = True) -> NotifyError:
        return NotifyError(
            f"notifier {self.name!r}: {why}", notifier=self.name, retryable=retryable
        )


@dataclass(frozen=True, kw_only=True)
class WebhookNotifier(_Filtered):
    """POSTs the alert's JSON to ``url``; any 2xx answer means delivered.

    ``user:password@`` in the url is sent as Basic authorization; ``headers`` are added.
    """

    kind: str = field(default="webhook", init=False)
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def body(self, alert: Alert) -> dict[str, Any]:
        """What is posted for ``alert``."""
        return alert.to_json()

    def deliver(self, alert: Alert) -> None:
        """POST once, within the timeout.

        Raises:
            NotifyError: a non-2xx answer (its code and the start of its body), or the url
                could not be reached (refused, timed out, unknown host).
        """
        data = json.dumps(self.body(alert)).encode()
        url, authorization = _split_credentials(self.url)
        headers = {
            **authorization,
            **self.headers,
            "Content-Type": "application/json",
            "User-Agent": f"pipetrail/{_version()}",
        }
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        where = self._where()
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            text = _excerpt(exc)
            # 4xx means the request itself is wrong, except "too slow" and "too many".
            retryable = not (400 <= exc.code < 500) or exc.code in (408, 429)
            raise self._fail(
                f"{where} answered HTTP {exc.code}{': ' + text if text else ''}",
                retryable=retryable,
            ) from exc
        except urllib.error.URLError as exc:
            raise self._fail(f"cannot reach {where}: {_reason(exc.reason)}") from exc
        except (OSError, http.client.HTTPException) as exc:
            # Timeouts while reading, resets, and answers that are not HTTP at all.
            raise self._fail(f"cannot reach {where}: {_reason(exc)}") from exc

    def _where(self) -> str:
        return _safe_url(self.url)


@dataclass(frozen=True, kw_only=True)
class SlackNotifier(WebhookNotifier):
    """Posts an incoming-webhook message (Slack, Mattermost, Rocket.Chat…) to ``url``."""

    kind: str = field(default="slack", init=False)

    def body(self, alert: Alert) -> dict[str, Any]:
        """``{"text": ..., "blocks": [...]}``: a one-line headline and the run's fields."""
        subject = _slack(alert.run or alert.pipeline)
        if alert.link:
            subject = f"<{alert.link}|{subject}>"
        headline = f"{_EMOJI[alert.event]} *{_TITLES[alert.event]}*: {subject}"
        if alert.message:
            headline += f" - {_slack(_one_line(alert.message))}"
        values = {
            "Pipeline": alert.pipeline,
            "Run": alert.run,
            "Status": alert.status,
            "Trigger": alert.trigger,
        }
        fields = [
            {"type": "mrkdwn", "text": f"*{label}*\n{_slack(value)}"}
            for label, value in values.items()
            if value
        ]
        return {
            "text": headline,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
                {"type": "section", "fields": fields},
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": f"pipetrail, {alert.at.isoformat()}"}],
                },
            ],
        }

    def _where(self) -> str:
        # An incoming-webhook URL carries its secret in the path.
        return _safe_url(self.url, path=False)


@dataclass(frozen=True, kw_only=True)
class EmailNotifier(_Filtered):
    """Sends a plain-text mail over SMTP (optionally STARTTLS or TLS, optionally logged in)."""

    kind: str = field(default="email", init=False)
    host: str
    port: int = 25
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def message(self, alert: Alert) -> EmailMessage:
        """The mail for ``alert``: subject ``[pipetrail] SLA missed: train/42``, every field."""
        mail = EmailMessage()
        mail["Subject"] = f"[pipetrail] {_one_line(alert.title)}"
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.to)
        mail["Date"] = formatdate(alert.at.timestamp(), localtime=False)
        mail["Message-ID"] = make_msgid(domain="pipetrail")
        lines = [
            alert.message,
            "",
            f"Event:    {alert.event}",
            f"Pipeline: {alert.pipeline}",
            f"Run:      {alert.run or '-'}",
            f"Status:   {alert.status or '-'}",
            f"Trigger:  {alert.trigger or '-'}",
            f"At:       {alert.at.isoformat()}",
        ]
        if alert.link:
            lines += ["", alert.link]
        mail.set_content("\n".join(lines) + "\n")
        return mail

    def deliver(self, alert: Alert) -> None:
        """Send once, within the timeout.

        Raises:
            NotifyError: the server cannot be reached, refused the login, the sender or a
                recipient (it names the refused addresses).
        """
        where = f"smtp server {self.host}:{self.port}"
        mail = self.message(alert)
        try:
            client: smtplib.SMTP
            if self.ssl:
                context = ssl.create_default_context()
                client = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                if self.starttls:
                    client.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    client.login(self.username, self.password or "")
                refused = client.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            raise self._refused(exc.recipients) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise self._fail(
                f"{where} refused the login of {self.username!r}: {_smtp_text(exc)}",
                retryable=False,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise self._fail(
                f"{where} answered {exc.smtp_code} {_smtp_text(exc)}",
                retryable=exc.smtp_code < 500,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise self._fail(f"cannot send through {where}: {_reason(exc)}") from exc
        if refused:
            raise self._refused(refused)

    def _refused(self, refused: Mapping[str, tuple[int, bytes]]) -> NotifyError:
        # Some recipients may have the mail already: sending again would repeat it to them.
        parts = [
            f"{address} ({code} {text.decode(errors='replace')})"
            for address, (code, text) in sorted(refused.items())
        ]
        return self._fail(
            f"smtp server {self.host}:{self.port} refused {', '.join(parts)}",
            retryable=all(code < 500 for code, _ in refused.values()),
        )


def run_link(base_url: str, run: str) -> str:
    """The dashboard page of ``run`` (``"train/42"``) under ``base_url`` (``Settings.base_url``).

    Raises:
        ValueError: ``run`` is not ``pipeline/number``.
    """
    pipeline, _, number = run.rpartition("/")
    if not pipeline or not number.isdigit():
        raise ValueError(f"run pathspec {run!r} is not 'pipeline/number'")
    return f"{base_url.rstrip('/')}/pipelines/{quote(pipeline, safe='')}/runs/{int(number)}"


def pipeline_link(base_url: str, pipeline: str) -> str:
    """The dashboard page listing ``pipeline``'s runs (for alerts without a run)."""
    return f"{base_url.rstrip('/')}/pipelines/{quote(pipeline, safe='')}/runs"


def build_notifiers(
    configs: Sequence[Mapping[str, Any]], *, env: Mapping[str, str] | None = None
) -> list[Notifier]:
    """Validate each entry and build its notifier, in order.

    Args:
        configs: one mapping per notifier (``PIPETRAIL_ALERTS`` or ``[[tool.pipetrail.alerts]]``).
        env: where ``password_env`` is looked up (default ``os.environ``).

    Raises:
        ConfigError: naming the entry (its 1-based index and name) and the bad field.
    """
    env = os.environ if env is None else env
    notifiers: list[Notifier] = []
    seen: dict[str, int] = {}
    for index, config in enumerate(configs, start=1):
        notifier = _build(index, config, env)
        if notifier.name in seen:
            raise ConfigError(
                f"{_entry(index, notifier.name)}: the name is already used by alerts entry "
                f"{seen[notifier.name]}; give each notifier its own name"
            )
        seen[notifier.name] = index
        notifiers.append(notifier)
    return notifiers


def _entry(index: int, name: object) -> str:
    return f"alerts entry {index}" + (f" ({name!r})" if isinstance(name, str) and name else "")


def _build(index: int, config: object, env: Mapping[str, str]) -> Notifier:
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"alerts entry {index} must be a table/object with a 'kind', "
            f"got {type(config).__name__}"
        )
    kind = config.get("kind")
    name = config.get("name")
    where = _entry(index, name)
    if kind not in KINDS:
        got = "has no kind" if kind is None else f"has an unknown kind {kind!r}"
        close = difflib.get_close_matches(kind, KINDS, n=1) if isinstance(kind, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where} {got}{hint}; expected one of {', '.join(KINDS)}")
    if "name" not in config:
        where = _entry(index, f"{kind}-{index}")
    check = _Checker(where, config)
    check.keys(_KEYS[kind])
    name = check.text("name") if "name" in config else f"{kind}-{index}"
    common: dict[str, Any] = {
        "name": name,
        "events": check.names("events", EVENTS),
        "pipelines": check.names("pipelines", None),
        "timeout": check.timeout(),
    }
    if kind in ("webhook", "slack"):
        url = check.url()
        if kind == "slack":
            return SlackNotifier(url=url, **common)
        return WebhookNotifier(url=url, headers=check.headers(), **common)
    use_ssl = check.flag("ssl")
    starttls = check.flag("starttls")
    if use_ssl and starttls:
        raise ConfigError(f"{where}: ssl and starttls exclude each other; choose one")
    username = check.text("username") if "username" in config else None
    password = check.password(env, username)
    return EmailNotifier(
        host=check.text("host", required=True),
        port=check.port(465 if use_ssl else 25),
        sender=check.addresses("from", single=True)[0],
        to=check.addresses("to", single=False),
        starttls=starttls,
        ssl=use_ssl,
        username=username,
        password=password,
        **common,
    )


@dataclass(frozen=True)
class _Checker:
    """Reads one entry's fields; every refusal names the entry and the field."""

    where: str
    config: Mapping[str, Any]

    def error(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key} {why}")

    def keys(self, allowed: Sequence[str]) -> None:
        for key in self.config:
            if key in allowed:
                continue
            if key == "password":
                raise self.error(
                    "password",
                    "must not be written in settings; put it in an environment variable "
                    "and name that variable in password_env",
                )
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{self.where}: unknown key {key!r}{hint}; a {self.config['kind']} notifier "
                f"takes {', '.join(sorted(allowed))}"
            )

    def text(self, key: str, *, required: bool = False) -> str:
        value = self.config.get(key)
        if value is None and required:
            raise self.error(key, "is missing")
        if not isinstance(value, str) or not value.strip() or _has_newline(value):
            raise self.error(key, f"must be a non-empty one-line string, got {value!r}")
        return value.strip()

    def names(self, key: str, allowed: Sequence[str] | None) -> frozenset[str] | None:
        if key not in self.config:
            return None
        value = self.config[key]
        if not isinstance(value, list | tuple) or not value:
            raise self.error(key, f"must be a non-empty list, got {value!r}; leave it out for all")
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.error(key, f"must list non-empty strings, got {item!r}")
            if allowed is not None and item not in allowed:
                raise self.error(key, f"has unknown event {item!r}; expected {', '.join(allowed)}")
        return frozenset(value)

    def timeout(self) -> float:
        value = self.config.get("timeout", DEFAULT_TIMEOUT)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:
            raise self.error("timeout", f"must be a number of seconds above 0, got {value!r}")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.config.get(key, False)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def url(self) -> str:
        if "url" not in self.config:
            raise self.error("url", "is missing")
        value = self.config["url"]
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            shown = _safe_url(value) if isinstance(value, str) else repr(value)
            raise self.error("url", f"must be an http:// or https:// URL, got {shown!r}")
        try:
            parts.port  # noqa: B018 - a bad port raises only when read
        except ValueError:
            raise self.error("url", f"has a bad port: {_safe_url(value)!r}") from None
        return str(value)

    def headers(self) -> dict[str, str]:
        value = self.config.get("headers", {})
        if not isinstance(value, Mapping):
            raise self.error("headers", f"must be a table of name = value, got {value!r}")
        for name, text in value.items():
            token = isinstance(name, str) and name and all(33 <= ord(c) < 127 for c in name)
            if not token or ":" in name:
                raise self.error("headers", f"has a bad header name {name!r}")
            if name.lower() in ("content-type", "content-length", "host"):
                raise self.error("headers", f"cannot set {name!r}; pipetrail sets it")
            if not isinstance(text, str) or _has_newline(text):
                # Never echo the value: headers carry tokens.
                raise self.error("headers", f"{name!r} must be a one-line string")
        return dict(value)

    def port(self, default: int) -> int:
        value = self.config.get("port", default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise self.error("port", f"must be an integer from 1 to 65535, got {value!r}")
        return value

    def addresses(self, key: str, *, single: bool) -> tuple[str, ...]:
        if key not in self.config:
            raise self.error(key, "is missing")
        value = self.config[key]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items or (single and len(items) != 1):
            expected = "an address" if single else "an address or a non-empty list of them"
            raise self.error(key, f"must be {expected}, got {value!r}")
        for item in items:
            if not isinstance(item, str) or _has_newline(item) or "@" not in item:
                raise self.error(key, f"has {item!r}, which is not an email address")
        return tuple(item.strip() for item in items)

    def password(self, env: Mapping[str, str], username: str | None) -> str | None:
        if "password_env" not in self.config:
            return None
        variable = self.text("password_env")
        if username is None:
            raise self.error("password_env", "needs a username to log in with")
        if variable not in env:
            raise self.error(
                "password_env", f"names {variable!r}, which is not set in the environment"
            )
        return env[variable]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected POST would arrive as a GET without its body: report the 3xx instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pipetrail")
    except PackageNotFoundError:
        return "0"


def _safe_url(url: str, *, path: bool = True) -> str:
    """``scheme://host:port/path``: no credentials, query or fragment (they carry secrets)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}{f':{port}' if port else ''}"
    if path:
        return shown + parts.path
    return shown + ("/…" if parts.path not in ("", "/") else "")


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without ``user:password@`` and the Basic ``Authorization`` header it implies."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, {}
    netloc = parts.netloc.rpartition("@")[2]
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    token = base64.b64encode(pair.encode()).decode()
    return urlunsplit(parts._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


def _excerpt(exc: urllib.error.HTTPError, limit: int = 200) -> str:
    try:
        raw = exc.read(limit * 4)
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    finally:
        exc.close()  # the error holds the response and its socket
    text = _one_line(raw.decode(errors="replace")).strip()
    return text[:limit] + ("…" if len(text) > limit else "")


def _reason(reason: object) -> str:
    if isinstance(reason, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _smtp_text(exc: smtplib.SMTPResponseException) -> str:
    raw = exc.smtp_error
    return _one_line(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))


def _slack(text: str) -> str:
    # The three characters Slack's mrkdwn asks to escape.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _has_newline(text: str) -> bool:
    return "\n" in text or "\r" in text
