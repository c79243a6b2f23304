"""The audit trail and the security log, read from the log output as an operator's collector
reads it: JSON lines that the configured handler writes."""

import io
import json
import logging
import re
import uuid
from http import HTTPStatus

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle
from rest_framework_simplejwt.tokens import AccessToken

from conversations import selectors, services
from conversations.models import Conversation
from conversations.tests.factories import TEST_PASSWORD, ConversationFactory, MessageFactory
from core import audit

pytestmark = pytest.mark.django_db

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
MISSING_ID = "00000000-0000-4000-8000-000000000000"
AUDIT_FIELDS = {
    "time",
    "level",
    "logger",
    "action",
    "request_id",
    "user_id",
    "conversation_id",
    "message_id",
    "outcome",
    "status",
    "duration_ms",
}


class LogOutput:
    """The text the audit and security loggers' handler writes, and its lines parsed."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self, logger: str | None = None) -> list[dict]:
        parsed = [json.loads(line) for line in self.text().splitlines() if line.strip()]
        return [line for line in parsed if logger is None or line["logger"] == logger]

    def audit(self) -> list[dict]:
        return self.lines("audit")

    def security(self) -> list[dict]:
        return self.lines("security")

    def clear(self) -> None:
        self.stream.seek(0)
        self.stream.truncate()


@pytest.fixture
def log_output():
    """Points the configured JSON handler of the ``audit`` and ``security`` loggers at a
    buffer for the test (settings.LOGGING sends them to stdout)."""
    handlers: set[logging.StreamHandler] = set()
    for name in (audit.AUDIT_LOGGER, audit.SECURITY_LOGGER):
        for handler in logging.getLogger(name).handlers:
            assert isinstance(handler, logging.StreamHandler), handler
            assert isinstance(handler.formatter, audit.JsonFormatter), handler.formatter
            handlers.add(handler)
    assert handlers, "settings.LOGGING gives the audit and security loggers no handler"
    stream = io.StringIO()
    previous = {handler: handler.setStream(stream) for handler in handlers}
    yield LogOutput(stream)
    for handler, old in previous.items():
        handler.setStream(old)


def conversation_url(conversation_id) -> str:
    return reverse("conversation-detail", args=[conversation_id])


def messages_url(conversation_id) -> str:
    return reverse("conversation-message-list", args=[conversation_id])


def message_url(conversation_id, message_id) -> str:
    return reverse("conversation-message-detail", args=[conversation_id, message_id])


def history_url(conversation_id) -> str:
    return reverse("conversation-history", args=[conversation_id])


def only_line(lines: list[dict]) -> dict:
    assert len(lines) == 1, lines
    return lines[0]


def assert_audit_line(line, response, *, action, user, conversation_id, message_id=None, outcome="ok"):
    assert set(line) >= AUDIT_FIELDS, line
    assert TIME.match(line["time"]), line["time"]
    assert line["logger"] == "audit"
    assert line["action"] == action
    assert line["request_id"] == response["X-Request-ID"]
    assert line["user_id"] == (str(user.pk) if user else None)
    assert line["conversation_id"] == (str(conversation_id) if conversation_id else None)
    assert line["message_id"] == (str(message_id) if message_id else None)
    assert line["outcome"] == outcome
    assert line["status"] == response.status_code
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0


# --- one audit line per operation ------------------------------------------------------------


def test_every_conversation_and_message_operation_writes_one_audit_line(auth_client, user, log_output):
    steps = []

    def call(method, url, action, **kwargs):
        log_output.clear()
        response = getattr(auth_client, method)(url, **kwargs)
        assert response.status_code < 300, response.content
        steps.append((action, response, only_line(log_output.audit())))
        return response

    created = call("post", reverse("conversation-list"), "conversation.create", data={"title": "T"}).json()
    cid = created["id"]
    call("get", reverse("conversation-list"), "conversation.list")
    call("get", conversation_url(cid), "conversation.read")
    call("patch", conversation_url(cid), "conversation.update", data={"title": "Renamed"})
    message = call("post", messages_url(cid), "message.append", data={"role": "user", "content": "hi"}).json()
    call("get", messages_url(cid), "message.list")
    call("get", message_url(cid, message["id"]), "message.read")
    call("get", history_url(cid), "history.load")
    call("delete", conversation_url(cid), "conversation.delete")

    for action, response, line in steps:
        message_id = message["id"] if action in {"message.append", "message.read"} else None
        conversation_id = None if action == "conversation.list" else cid
        assert_audit_line(
            line, response, action=action, user=user, conversation_id=conversation_id, message_id=message_id
        )
    counts = {line["action"]: line.get("count") for _, _, line in steps}
    assert counts["conversation.list"] == 1
    assert counts["message.list"] == 1
    assert counts["history.load"] == 1
    assert log_output.security() == []


def test_the_callers_request_id_is_in_the_audit_line(auth_client, log_output):
    auth_client.get(reverse("conversation-list"), headers={"X-Request-ID": "trace-42"})

    assert only_line(log_output.audit())["request_id"] == "trace-42"


def test_an_idempotent_replay_is_marked(auth_client, user, log_output):
    conversation = ConversationFactory.create(user=user)
    body = {"role": "user", "content": "once"}
    for _ in range(2):
        auth_client.post(messages_url(conversation.pk), body, headers={"Idempotency-Key": "k-1"})

    first, second = log_output.audit()
    assert "replayed" not in first
    assert second["replayed"] is True
    assert first["message_id"] == second["message_id"]


def test_an_invalid_body_is_audited_as_invalid(auth_client, user, log_output):
    conversation = ConversationFactory.create(user=user)

    response = auth_client.post(messages_url(conversation.pk), {"role": "robot", "content": "x"})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    line = only_line(log_output.audit())
    assert_audit_line(
        line,
        response,
        action="message.append",
        user=user,
        conversation_id=conversation.pk,
        outcome="invalid",
    )


def test_a_server_error_is_audited_as_error(auth_client, user, log_output, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(services, "conversation_create", broken)
    auth_client.raise_request_exception = False

    response = auth_client.post(reverse("conversation-list"), {"title": "x"})

    assert response.status_code == HTTPStatus.INTERNAL_SERVER_ERROR
    line = only_line(log_output.audit())
    assert (line["action"], line["outcome"], line["status"]) == ("conversation.create", "error", 500)
    assert line["user_id"] == str(user.pk)


def test_options_and_unsupported_methods_are_no_operation(auth_client, user, log_output):
    conversation = ConversationFactory.create(user=user)

    auth_client.options(reverse("conversation-list"))
    auth_client.put(conversation_url(conversation.pk), {"title": "x"})

    assert log_output.audit() == []


# --- security lines for refusals ---------------------------------------------------------------


def test_missing_token_is_a_security_line_and_a_denied_audit_line(api_client, log_output):
    response = api_client.get(reverse("conversation-list"))

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    line = only_line(log_output.security())
    assert TIME.match(line["time"])
    assert line["event"] == "access.unauthenticated"
    assert line["status"] == 401
    assert line["request_id"] == response["X-Request-ID"]
    assert line["user_id"] is None
    assert (line["method"], line["path"]) == ("GET", reverse("conversation-list"))
    assert line["remote_addr"] == "127.0.0.1"
    assert line["reason"] == "not_authenticated"
    denied = only_line(log_output.audit())
    assert (denied["action"], denied["outcome"], denied["user_id"]) == ("conversation.list", "denied", None)


def test_a_bad_token_is_a_security_line_on_any_endpoint(api_client, log_output):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-jwt")

    response = api_client.get(reverse("auth-me"))

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    line = only_line(log_output.security())
    assert (line["event"], line["reason"]) == ("access.unauthenticated", "token_not_valid")


def test_wrong_password_at_the_token_endpoint_is_a_security_line(api_client, user, log_output):
    response = api_client.post(reverse("auth-token"), {"username": user.username, "password": "wrong"})

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    line = only_line(log_output.security())
    assert line["event"] == "access.unauthenticated"
    assert line["path"] == reverse("auth-token")


def test_naming_another_user_id_is_a_forbidden_security_line(auth_client, user, log_output):
    response = auth_client.post(reverse("conversation-list"), {"title": "x", "user_id": str(uuid.uuid4())})

    assert response.status_code == HTTPStatus.FORBIDDEN
    line = only_line(log_output.security())
    assert (line["event"], line["status"], line["user_id"]) == ("access.forbidden", 403, str(user.pk))
    assert only_line(log_output.audit())["outcome"] == "denied"


def test_throttled_request_is_a_security_line(auth_client, user, log_output, settings, monkeypatch):
    rates = {"anon": "100/minute", "user": "2/minute"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)

    answers = [auth_client.get(reverse("conversation-list")) for _ in range(3)]

    assert answers[2].status_code == HTTPStatus.TOO_MANY_REQUESTS
    line = only_line(log_output.security())
    assert (line["event"], line["status"], line["user_id"]) == ("access.throttled", 429, str(user.pk))
    assert 0 < int(line["retry_after"]) <= 60
    assert [a["outcome"] for a in log_output.audit()] == ["ok", "ok", "throttled"]


def test_other_users_conversation_is_a_not_found_line_that_knows_the_owner(
    auth_client, user, other_user, log_output
):
    theirs = ConversationFactory.create(user=other_user)

    response = auth_client.get(conversation_url(theirs.pk))

    assert response.status_code == HTTPStatus.NOT_FOUND
    line = only_line(log_output.security())
    assert line["event"] == "access.not_found"
    assert line["user_id"] == str(user.pk)
    assert line["conversation_id"] == str(theirs.pk)
    assert line["action"] == "conversation.read"
    assert line["malformed_id"] is False
    assert line["belongs_to_other_user"] is True
    assert only_line(log_output.audit())["outcome"] == "not_found"


@pytest.mark.parametrize("operation", ["list", "append", "history", "update", "delete"])
def test_every_operation_on_another_users_conversation_is_flagged(
    auth_client, other_user, log_output, operation
):
    theirs = ConversationFactory.create(user=other_user)
    method, url, body = {
        "list": ("get", messages_url(theirs.pk), None),
        "append": ("post", messages_url(theirs.pk), {"role": "user", "content": "x"}),
        "history": ("get", history_url(theirs.pk), None),
        "update": ("patch", conversation_url(theirs.pk), {"title": "x"}),
        "delete": ("delete", conversation_url(theirs.pk), None),
    }[operation]

    response = getattr(auth_client, method)(url, body)

    assert response.status_code == HTTPStatus.NOT_FOUND
    line = only_line(log_output.security())
    assert (line["conversation_id"], line["belongs_to_other_user"]) == (str(theirs.pk), True)


def test_other_users_message_is_flagged(auth_client, user, other_user, log_output):
    mine = ConversationFactory.create(user=user)
    theirs = MessageFactory.create(conversation=ConversationFactory.create(user=other_user))

    response = auth_client.get(message_url(mine.pk, theirs.pk))

    assert response.status_code == HTTPStatus.NOT_FOUND
    line = only_line(log_output.security())
    assert line["message_id"] == str(theirs.pk)
    assert line["belongs_to_other_user"] is True


def test_missing_and_malformed_ids_are_not_found_lines_without_an_owner(auth_client, user, log_output):
    mine = MessageFactory.create(conversation=ConversationFactory.create(user=user))

    missing = auth_client.get(conversation_url(MISSING_ID))
    own_message_elsewhere = auth_client.get(message_url(ConversationFactory.create(user=user).pk, mine.pk))
    malformed = auth_client.get("/api/v1/conversations/not-a-uuid/")

    assert {missing.status_code, own_message_elsewhere.status_code, malformed.status_code} == {404}
    first, second, third = log_output.security()
    assert (first["conversation_id"], first["belongs_to_other_user"]) == (MISSING_ID, False)
    assert second["belongs_to_other_user"] is False
    assert (third["conversation_id"], third["malformed_id"], third["belongs_to_other_user"]) == (
        None,
        True,
        None,
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="only PostgreSQL has a serving role")
def test_the_serving_role_cannot_tell_the_owner_and_says_so(auth_client, other_user, log_output, settings):
    settings.DATABASE_SERVING_ROLE = connection.settings_dict["USER"]
    theirs = ConversationFactory.create(user=other_user)

    auth_client.get(conversation_url(theirs.pk))

    assert only_line(log_output.security())["belongs_to_other_user"] is None


@pytest.mark.skipif(
    not django_settings.BROWSABLE_API, reason="session login exists only with DJANGO_DEBUG=true"
)
def test_failed_session_login_is_a_security_line_without_the_credentials(user, log_output):
    login_path = reverse("rest_framework:login")
    response = Client().post(login_path, {"username": user.username, "password": "Wrong-Secret-991"})

    assert response.status_code == HTTPStatus.OK  # the form again, with an error
    line = only_line(log_output.security())
    assert (line["event"], line["path"]) == ("auth.login_failed", login_path)
    assert user.username not in log_output.text()
    assert "Wrong-Secret-991" not in log_output.text()


def test_behind_a_trusted_proxy_the_security_line_names_the_client(api_client, log_output, settings):
    settings.API_TRUSTED_PROXIES = 1

    api_client.get(
        reverse("conversation-list"), REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.0.0.1, 198.51.100.4"
    )

    line = only_line(log_output.security())
    assert (line["event"], line["remote_addr"]) == ("access.unauthenticated", "198.51.100.4")


def test_metrics_refusal_is_a_security_line(client, log_output):
    response = client.get(reverse("metrics"), REMOTE_ADDR="203.0.113.9")

    assert response.status_code == HTTPStatus.FORBIDDEN
    line = only_line(log_output.security())
    assert (line["event"], line["remote_addr"]) == ("access.forbidden", "203.0.113.9")


# --- what is never logged ---------------------------------------------------------------------


def test_no_message_content_title_password_or_token_reaches_any_log(user, log_output, caplog):
    caplog.set_level(logging.DEBUG)
    marker = f"SECRET-CONTENT-{uuid.uuid4().hex}"
    title = f"SECRET-TITLE-{uuid.uuid4().hex}"
    token = str(AccessToken.for_user(user))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    cid = client.post(reverse("conversation-list"), {"title": title}).json()["id"]
    client.patch(conversation_url(cid), {"title": title + "-2"})
    client.post(messages_url(cid), {"role": "user", "content": marker}, headers={"Idempotency-Key": marker})
    client.post(messages_url(cid), {"role": "robot", "content": marker})  # 400
    client.post(messages_url(cid), {"role": "user", "content": marker, "user_id": marker})  # 403
    client.get(messages_url(cid) + f"?created_after={marker}")  # 400
    client.get(history_url(cid))
    client.get(messages_url(MISSING_ID))
    APIClient().post(reverse("auth-token"), {"username": user.username, "password": TEST_PASSWORD})
    APIClient().post(reverse("auth-token"), {"username": user.username, "password": marker})
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION=f"Bearer {token}x")
    forged.get(reverse("conversation-list"))

    # What the handlers write: the JSON lines, and every other record as text and as JSON.
    formatter = audit.JsonFormatter()
    everything = log_output.text() + caplog.text + "".join(formatter.format(r) for r in caplog.records)
    assert len(log_output.audit()) >= 7
    for secret in (marker, title, token, TEST_PASSWORD):
        assert secret not in everything


def test_record_refuses_fields_that_could_carry_content_or_credentials():
    for name in ("content", "title", "token", "password", "authorization"):
        with pytest.raises(ValueError, match="never carry"):
            audit.record("message.append", user_id=None, outcome="ok", **{name: "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scalar"):
        audit.record("conversation.export", user_id=None, outcome="ok", ids=["a"])  # type: ignore[arg-type]


# --- the functions for code outside a request ---------------------------------------------------


def test_record_writes_a_line_for_a_management_command(log_output):
    user_id = uuid.uuid4()

    audit.record(
        "conversation.export",
        user_id=user_id,
        outcome="ok",
        duration_ms=12.3456,
        conversations=3,
        messages=40,
        format="jsonl",
    )

    line = only_line(log_output.audit())
    assert line["action"] == "conversation.export"
    assert line["user_id"] == str(user_id)
    assert (line["conversations"], line["messages"], line["format"]) == (3, 40, "jsonl")
    assert line["duration_ms"] == 12.346
    assert line["request_id"] is None


def test_operation_times_the_block_and_records_errors(log_output):
    with audit.operation("conversation.export", user_id=str(uuid.uuid4())) as fields:
        fields["conversations"] = 2
    with pytest.raises(RuntimeError), audit.operation("conversation.import", user_id=None):
        raise RuntimeError("disk full")

    ok, failed = log_output.audit()
    assert (ok["outcome"], ok["conversations"]) == ("ok", 2)
    assert ok["duration_ms"] >= 0
    assert (failed["action"], failed["outcome"]) == ("conversation.import", "error")


def test_other_loggers_keep_their_message_in_json():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", ("now",), None)

    line = json.loads(audit.JsonFormatter().format(record))

    assert (line["logger"], line["level"], line["message"]) == ("x", "error", "boom now")
    assert TIME.match(line["time"])


def test_audited_service_functions_write_the_agents_lines(user, log_output):
    # The service layer's own functions, as the agent calls them.
    create, append, history = services.conversation_create, services.message_append, selectors.history_load

    conversation = create(user=user, title="agent")
    message = append(user=user, conversation_id=conversation.pk, role="user", content="secret words")
    history(user=user, conversation_id=conversation.pk)
    with pytest.raises(Conversation.DoesNotExist):
        history(user=user, conversation_id=MISSING_ID)

    created, appended, loaded, missing = log_output.audit()
    assert (created["action"], created["conversation_id"], created["user_id"]) == (
        "conversation.create",
        str(conversation.pk),
        str(user.pk),
    )
    assert (appended["conversation_id"], appended["message_id"]) == (str(conversation.pk), str(message.pk))
    assert (loaded["action"], loaded["outcome"], loaded["caller"]) == ("history.load", "ok", "in_process")
    assert (missing["outcome"], missing["conversation_id"]) == ("not_found", MISSING_ID)
    assert all(line["request_id"] is None and line["duration_ms"] >= 0 for line in log_output.audit())
    assert "secret words" not in log_output.text()


def test_audited_functions_called_by_the_api_leave_only_the_requests_line(auth_client, user, log_output):
    response = auth_client.post(reverse("conversation-list"), {"title": "once"})

    assert response.status_code == HTTPStatus.CREATED
    line = only_line(log_output.audit())
    assert line["request_id"] == response["X-Request-ID"]
    assert "caller" not in line
