"""Notifiers delivering to real receivers: a local HTTP server and a local SMTP server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pipetrail.errors import ConfigError, PipetrailError
from pipetrail.scheduling.notify import (
    EVENTS,
    Alert,
    EmailNotifier,
    Notifier,
    NotifyError,
    SlackNotifier,
    WebhookNotifier,
    build_notifiers,
    pipeline_link,
    run_link,
)

AT = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)
LINK = "http://127.0.0.1:8765/runs/train/42"


def _alert(event: str = "run_failed", **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "event": event,
        "pipeline": "train",
        "run": "train/42",
        "status": "failed",
        "trigger": "nightly",
        "message": "step fit failed after 3 attempts",
        "link": LINK,
        "at": AT,
    }
    values.update(fields)
    return Alert(**values)


# --- a real HTTP receiver --------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    answer: bytes = b"ok"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    """An HTTP server on a free local port that records every request and answers as told."""
    state = HttpReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append(
                Received("POST", self.path, dict(self.headers.items()), self.rfile.read(length))
            )
            self.send_response(state.status)
            self.send_header("Content-Length", str(len(state.answer)))
            self.end_headers()
            self.wfile.write(state.answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _webhook(url: str, **config: Any) -> Notifier:
    return build_notifiers([{"kind": "webhook", "url": url, **config}])[0]


def test_webhook_sends_url_credentials_as_basic_authorization(receiver: HttpReceiver) -> None:
    url = receiver.url.replace("http://", "http://bot:p%40ss@") + "/hook"
    _webhook(url).deliver(_alert())
    (request,) = receiver.requests
    assert request.path == "/hook"
    assert request.headers["Authorization"] == "Basic Ym90OnBAc3M="  # bot:p@ss


def test_webhook_posts_the_alert_as_json(receiver: HttpReceiver) -> None:
    notifier = _webhook(receiver.url + "/hooks/pipetrail", headers={"X-Token": "s3cret"})
    notifier.deliver(_alert())
    (request,) = receiver.requests
    assert request.path == "/hooks/pipetrail"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("pipetrail/")
    assert request.headers["X-Token"] == "s3cret"
    assert request.json() == {
        "source": "pipetrail",
        "event": "run_failed",
        "pipeline": "train",
        "run": "train/42",
        "status": "failed",
        "trigger": "nightly",
        "message": "step fit failed after 3 attempts",
        "link": LINK,
        "at": "2026-12-07T02:30:00+00:00",
    }


def test_webhook_non_2xx_names_the_code_and_the_start_of_the_body(
    receiver: HttpReceiver,
) -> None:
    receiver.status = 500
    receiver.answer = b"database is down\n" + b"x" * 1000
    notifier = _webhook(receiver.url + "/hook?token=s3cret", name="ops")
    with pytest.raises(NotifyError) as caught:
        notifier.deliver(_alert())
    text = str(caught.value)
    assert "'ops'" in text and "HTTP 500" in text and "database is down" in text
    assert f"{receiver.url}/hook" in text
    assert "s3cret" not in text
    assert len(text) < 400
    assert caught.value.notifier == "ops" and caught.value.retryable
    assert isinstance(caught.value, PipetrailError)


def test_webhook_4xx_is_not_worth_retrying(receiver: HttpReceiver) -> None:
    receiver.status = 404
    with pytest.raises(NotifyError, match="HTTP 404") as caught:
        _webhook(receiver.url).deliver(_alert())
    assert not caught.value.retryable


def test_webhook_redirect_is_a_failure_not_a_get(receiver: HttpReceiver) -> None:
    receiver.status = 302
    with pytest.raises(NotifyError, match="HTTP 302"):
        _webhook(receiver.url).deliver(_alert())
    assert [r.method for r in receiver.requests] == ["POST"]


def test_webhook_to_a_closed_port_names_the_url_without_secrets() -> None:
    url = f"http://user:pw@127.0.0.1:{_free_port()}/hook?token=s3cret"
    with pytest.raises(NotifyError) as caught:
        _webhook(url).deliver(_alert())
    text = str(caught.value)
    assert "webhook-1" in text and "connection refused" in text
    assert "/hook" in text and "s3cret" not in text and "pw" not in text


def test_webhook_that_never_answers_fails_with_a_timeout(silent_url: str) -> None:
    with pytest.raises(NotifyError, match="timed out") as caught:
        _webhook(silent_url, timeout=0.5).deliver(_alert())
    assert caught.value.retryable


def test_slack_posts_a_readable_message_with_fields(receiver: HttpReceiver) -> None:
    notifier = build_notifiers([{"kind": "slack", "url": receiver.url + "/services/T/B/x"}])[0]
    notifier.deliver(_alert("sla_missed", status="running", message="still running <after> 2h"))
    body = receiver.requests[0].json()
    assert body["text"] == (
        f":alarm_clock: *SLA missed*: <{LINK}|train/42> - still running &lt;after&gt; 2h"
    )
    section, fields, context = body["blocks"]
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": body["text"]}}
    assert [f["text"] for f in fields["fields"]] == [
        "*Pipeline*\ntrain",
        "*Run*\ntrain/42",
        "*Status*\nrunning",
        "*Trigger*\nnightly",
    ]
    assert context["type"] == "context"


def test_slack_without_a_run_or_link_names_the_pipeline(receiver: HttpReceiver) -> None:
    notifier = build_notifiers([{"kind": "slack", "url": receiver.url}])[0]
    alert = _alert("start_failed", run=None, status=None, link=None, message="no flow.py")
    notifier.deliver(alert)
    body = receiver.requests[0].json()
    assert body["text"] == ":warning: *Start failed*: train - no flow.py"
    assert [f["text"] for f in body["blocks"][1]["fields"]] == [
        "*Pipeline*\ntrain",
        "*Trigger*\nnightly",
    ]


def test_slack_failure_hides_the_secret_path(receiver: HttpReceiver) -> None:
    receiver.status = 403
    receiver.answer = b"invalid_token"
    notifier = build_notifiers([{"kind": "slack", "url": receiver.url + "/services/T/B/s3cret"}])
    with pytest.raises(NotifyError, match="HTTP 403: invalid_token") as caught:
        notifier[0].deliver(_alert())
    assert "s3cret" not in str(caught.value)


# --- a real SMTP receiver --------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def mail(self, index: int = 0) -> Message:
        content = self.envelopes[index].original_content
        assert isinstance(content, bytes)
        return message_from_bytes(content)


class Refuser(Recorder):
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def _authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"bot", b"pw")
    # handled=False: the server answers 535 itself.
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpReceiver:
    handler: Recorder
    port: int


def _smtp(handler: Recorder, **parameters: Any) -> Iterator[SmtpReceiver]:
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **parameters)
    controller.start()
    try:
        yield SmtpReceiver(handler, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    yield from _smtp(Recorder())


@pytest.fixture
def refusing_smtp() -> Iterator[SmtpReceiver]:
    yield from _smtp(Refuser())


@pytest.fixture
def auth_smtp() -> Iterator[SmtpReceiver]:
    yield from _smtp(Recorder(), auth_require_tls=False, authenticator=_authenticator)


def _email(port: int, **config: Any) -> Notifier:
    entry = {"kind": "email", "host": "127.0.0.1", "port": port, "from": "pt@example.org"}
    entry.update(config)
    entry.setdefault("to", "ops@example.org")
    return build_notifiers([entry], env={"SMTP_PASSWORD": "pw", "WRONG": "nope"})[0]


def test_email_sends_every_field_and_the_link(smtp: SmtpReceiver) -> None:
    notifier = _email(smtp.port, to=["ops@example.org", "ml@example.org"])
    notifier.deliver(_alert("sla_missed", status="running", message="running for 2h; SLA 1h"))
    (envelope,) = smtp.handler.envelopes
    assert envelope.mail_from == "pt@example.org"
    assert envelope.rcpt_tos == ["ops@example.org", "ml@example.org"]
    mail = smtp.handler.mail()
    assert mail["Subject"] == "[pipetrail] SLA missed: train/42"
    assert mail["From"] == "pt@example.org"
    assert mail["To"] == "ops@example.org, ml@example.org"
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    text = body.decode()
    for expected in (
        "running for 2h; SLA 1h",
        "sla_missed",
        "train/42",
        "running",
        "nightly",
        "2026-12-07T02:30:00+00:00",
        LINK,
    ):
        assert expected in text


def test_email_for_a_start_that_failed_names_the_pipeline(smtp: SmtpReceiver) -> None:
    _email(smtp.port).deliver(_alert("start_failed", run=None, status=None, link=None))
    assert smtp.handler.mail()["Subject"] == "[pipetrail] Start failed: train"


def test_email_refused_recipient_is_named(refusing_smtp: SmtpReceiver) -> None:
    notifier = _email(refusing_smtp.port, to="nobody@example.org")
    with pytest.raises(NotifyError) as caught:
        notifier.deliver(_alert())
    text = str(caught.value)
    assert "email-1" in text and "nobody@example.org" in text and "550" in text
    assert not caught.value.retryable
    assert refusing_smtp.handler.envelopes == []


def test_email_partly_refused_still_fails_and_names_who(refusing_smtp: SmtpReceiver) -> None:
    notifier = _email(refusing_smtp.port, to=["ops@example.org", "nobody@example.org"])
    with pytest.raises(NotifyError, match=r"refused nobody@example\.org \(550"):
        notifier.deliver(_alert())
    assert refusing_smtp.handler.envelopes[0].rcpt_tos == ["ops@example.org"]


def test_email_to_a_closed_port_fails() -> None:
    with pytest.raises(NotifyError, match="connection refused") as caught:
        _email(_free_port()).deliver(_alert())
    assert "127.0.0.1" in str(caught.value)


def test_email_to_a_server_that_never_greets_times_out(silent_url: str) -> None:
    port = int(silent_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(NotifyError, match="timed out"):
        _email(port, timeout=0.5).deliver(_alert())


def test_email_logs_in_with_the_password_from_the_environment(auth_smtp: SmtpReceiver) -> None:
    _email(auth_smtp.port, username="bot", password_env="SMTP_PASSWORD").deliver(_alert())
    assert len(auth_smtp.handler.envelopes) == 1


def test_email_with_a_wrong_password_is_not_worth_retrying(auth_smtp: SmtpReceiver) -> None:
    notifier = _email(auth_smtp.port, username="bot", password_env="WRONG")
    with pytest.raises(NotifyError, match="refused the login of 'bot'") as caught:
        notifier.deliver(_alert())
    assert not caught.value.retryable
    assert "nope" not in str(caught.value) and "nope" not in repr(notifier)
    assert auth_smtp.handler.envelopes == []


def test_email_starttls_to_a_server_without_it_fails(smtp: SmtpReceiver) -> None:
    with pytest.raises(NotifyError, match="STARTTLS"):
        _email(smtp.port, starttls=True).deliver(_alert())


# --- filters, the alert, the built notifiers -------------------------------------------------


def test_events_and_pipelines_filter_what_a_notifier_wants() -> None:
    everything, failures, train_only = build_notifiers(
        [
            {"kind": "webhook", "url": "http://h/"},
            {"kind": "webhook", "url": "http://h/", "events": ["run_failed", "start_failed"]},
            {"kind": "slack", "url": "http://h/", "pipelines": ["train"]},
        ]
    )
    alerts = [_alert(event, pipeline=p) for event in EVENTS for p in ("train", "etl")]
    assert all(everything.wants(a) for a in alerts)
    assert {(a.event, a.pipeline) for a in alerts if failures.wants(a)} == {
        ("run_failed", "train"),
        ("run_failed", "etl"),
        ("start_failed", "train"),
        ("start_failed", "etl"),
    }
    assert {a.pipeline for a in alerts if train_only.wants(a)} == {"train"}


def test_built_notifiers_have_kinds_names_and_settings() -> None:
    built = build_notifiers(
        [
            {"kind": "webhook", "url": "https://h/x", "timeout": 3},
            {"kind": "slack", "url": "https://h/y", "name": "chat"},
            {"kind": "email", "host": "mail", "from": "a@b", "to": "c@d", "ssl": True},
        ],
        env={},
    )
    assert [(n.kind, n.name) for n in built] == [
        ("webhook", "webhook-1"),
        ("slack", "chat"),
        ("email", "email-3"),
    ]
    webhook, slack, email = built
    assert isinstance(webhook, WebhookNotifier) and webhook.timeout == 3.0
    assert isinstance(slack, SlackNotifier) and slack.timeout == 10.0
    assert isinstance(email, EmailNotifier)
    assert (email.port, email.to, email.ssl) == (465, ("c@d",), True)
    assert all(isinstance(n, Notifier) for n in built)
    assert build_notifiers([]) == []


def test_alert_json_round_trips_and_converts_to_utc_iso() -> None:
    alert = _alert(at=datetime(2026, 12, 7, 3, 30, tzinfo=timezone(timedelta(hours=1))))
    data = alert.to_json()
    assert data["at"] == "2026-12-07T03:30:00+01:00"
    assert Alert.from_json(json.loads(json.dumps(data))) == alert


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"event": "run_exploded"}, "unknown alert event 'run_exploded'"),
        ({"at": datetime(2026, 12, 7)}, "has no time zone"),
    ],
)
def test_alert_refuses_an_unknown_event_or_a_naive_time(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _alert(**fields)


BAD = [
    # (what, entries, every fragment the one-line message must contain)
    ("not a table", ["webhook"], ["alerts entry 1", "table/object", "str"]),
    ("no kind", [{"url": "http://h/"}], ["alerts entry 1", "no kind", "webhook, slack, email"]),
    ("unknown kind", [{"kind": "pager"}], ["alerts entry 1 has an unknown kind 'pager'"]),
    ("misspelt kind", [{"kind": "slak"}], ["'slak' (did you mean 'slack'?)"]),
    (
        "typo in a key",
        [{"kind": "webhook", "name": "ops", "url": "http://h/", "evnts": ["run_failed"]}],
        ["alerts entry 1 ('ops')", "unknown key 'evnts'", "did you mean 'events'"],
    ),
    (
        "a key of another kind",
        [{"kind": "slack", "url": "http://h/", "headers": {}}],
        ["unknown key 'headers'"],
    ),
    ("missing url", [{"kind": "webhook"}], ["alerts entry 1 ('webhook-1')", "url is missing"]),
    ("ftp url", [{"kind": "slack", "url": "ftp://h/x"}], ["url", "http:// or https://"]),
    (
        "url with a bad port",
        [{"kind": "webhook", "url": "http://h:99999/"}],
        ["url has a bad port"],
    ),
    (
        "unknown event",
        [{"kind": "webhook", "url": "http://h/", "events": ["run_failed", "run_exploded"]}],
        ["events has unknown event 'run_exploded'", "sla_missed"],
    ),
    (
        "empty events",
        [{"kind": "webhook", "url": "http://h/", "events": []}],
        ["events must be a non-empty list"],
    ),
    (
        "pipelines not a list",
        [{"kind": "webhook", "url": "http://h/", "pipelines": "train"}],
        ["pipelines must be a non-empty list", "'train'"],
    ),
    (
        "zero timeout",
        [{"kind": "webhook", "url": "http://h/", "timeout": 0}],
        ["timeout must be a number of seconds above 0", "0"],
    ),
    (
        "header with a newline",
        [{"kind": "webhook", "url": "http://h/", "headers": {"X-Token": "a\nb"}}],
        ["headers 'X-Token' must be a one-line string"],
    ),
    (
        "content-type header",
        [{"kind": "webhook", "url": "http://h/", "headers": {"content-type": "text/plain"}}],
        ["cannot set 'content-type'"],
    ),
    (
        "duplicate name",
        [
            {"kind": "webhook", "url": "http://h/", "name": "ops"},
            {"kind": "slack", "url": "http://h/", "name": "ops"},
        ],
        ["alerts entry 2 ('ops')", "already used by alerts entry 1"],
    ),
    (
        "default name taken",
        [
            {"kind": "webhook", "url": "http://h/", "name": "webhook-2"},
            {"kind": "webhook", "url": "http://h/"},
        ],
        ["alerts entry 2 ('webhook-2')", "already used"],
    ),
    ("empty name", [{"kind": "webhook", "url": "http://h/", "name": " "}], ["name must be"]),
    ("missing host", [{"kind": "email", "from": "a@b", "to": "c@d"}], ["host is missing"]),
    (
        "port as text",
        [{"kind": "email", "host": "m", "port": "587", "from": "a@b", "to": "c@d"}],
        ["port must be an integer from 1 to 65535", "'587'"],
    ),
    (
        "port out of range",
        [{"kind": "email", "host": "m", "port": 70000, "from": "a@b", "to": "c@d"}],
        ["port must be", "70000"],
    ),
    ("missing to", [{"kind": "email", "host": "m", "from": "a@b"}], ["to is missing"]),
    (
        "empty to",
        [{"kind": "email", "host": "m", "from": "a@b", "to": []}],
        ["to must be an address or a non-empty list"],
    ),
    (
        "to not an address",
        [{"kind": "email", "host": "m", "from": "a@b", "to": ["ops"]}],
        ["to has 'ops'", "not an email address"],
    ),
    ("missing from", [{"kind": "email", "host": "m", "to": "c@d"}], ["from is missing"]),
    (
        "password in settings",
        [{"kind": "email", "host": "m", "from": "a@b", "to": "c@d", "password": "hunter2"}],
        ["password must not be written in settings", "password_env"],
    ),
    (
        "password_env not set",
        [
            {
                "kind": "email",
                **{"host": "m", "from": "a@b", "to": "c@d"},
                **{"username": "bot", "password_env": "SMTP_PW"},
            }
        ],
        ["password_env names 'SMTP_PW', which is not set"],
    ),
    (
        "password_env without username",
        [{"kind": "email", "host": "m", "from": "a@b", "to": "c@d", "password_env": "HOME"}],
        ["password_env needs a username"],
    ),
    (
        "ssl and starttls",
        [
            {
                "kind": "email",
                **{"host": "m", "from": "a@b", "to": "c@d", "ssl": True, "starttls": True},
            }
        ],
        ["ssl and starttls exclude each other"],
    ),
    (
        "starttls not a bool",
        [{"kind": "email", "host": "m", "from": "a@b", "to": "c@d", "starttls": "yes"}],
        ["starttls must be true or false", "'yes'"],
    ),
]


@pytest.mark.parametrize(("what", "entries", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_build_notifiers_names_the_entry_and_the_bad_field(
    what: str, entries: list[Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_notifiers(entries, env={"HOME": "/root"})
    text = str(caught.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, (what, text)


def test_bad_header_values_are_never_echoed() -> None:
    entry = {"kind": "webhook", "url": "http://h/", "headers": {"Authorization": ["tok3n"]}}
    with pytest.raises(ConfigError) as caught:
        build_notifiers([entry])
    assert "tok3n" not in str(caught.value)


def test_links_point_at_the_dashboard_pages() -> None:
    base = "https://pt.example.org/"
    assert run_link(base, "train/42") == "https://pt.example.org/pipelines/train/runs/42"
    assert run_link(base, "my pipe/7") == "https://pt.example.org/pipelines/my%20pipe/runs/7"
    assert pipeline_link(base, "train") == "https://pt.example.org/pipelines/train/runs"
    with pytest.raises(ValueError, match="'train' is not 'pipeline/number'"):
        run_link(base, "train")
