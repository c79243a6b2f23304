"""GET /api/v1/export/: the command's export over REST, streamed.

Tests marked ``transaction=True`` run with no outer transaction or row-level-security scope
(see conftest), so on PostgreSQL the export takes its real path: its own REPEATABLE READ
snapshot and its own user scope, held by the streamed body after the view has returned.
"""

import json
import logging
import sys
from collections.abc import Iterator
from http import HTTPStatus
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle

from conftest import client_for
from conversations import portability
from core import audit
from core.rls import user_scope

from .factories import ConversationFactory, MessageFactory, UserFactory
from .test_commands import empty_the_database, export, history, import_text, rich_history, stored

pytestmark = pytest.mark.django_db

EXPORT_URL = reverse("export")


def streamed(response) -> Iterator[bytes]:
    assert response.streaming, "the export must be a streamed answer"
    return iter(response.streaming_content)


def body_of(response) -> bytes:
    return b"".join(streamed(response))


def read_whole(response):
    """``response``, its streamed body read to the end: the view starts the export's
    generator, and only the end of the body (or ``close``, as a server calls it) ends the
    generator's snapshot and user scope."""
    if response.streaming:
        b"".join(response.streaming_content)
    return response


def rest_export(user, output_format: str | None = None) -> bytes:
    url = EXPORT_URL if output_format is None else f"{EXPORT_URL}?format={output_format}"
    response = client_for(user).get(url)
    assert response.status_code == HTTPStatus.OK, response.content
    return body_of(response)


@pytest.fixture
def audit_lines():
    """The export's audit lines written during the test."""
    stream = StringIO()
    handlers = logging.getLogger(audit.AUDIT_LOGGER).handlers
    previous = [handler.setStream(stream) for handler in handlers]  # type: ignore[attr-defined]

    def export_lines() -> list[dict]:
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [line for line in lines if line.get("action") == "conversation.export"]

    yield export_lines
    for handler, old in zip(handlers, previous, strict=True):
        handler.setStream(old)  # type: ignore[attr-defined]


def load(user, *, conversations: int, messages_each: int) -> None:
    """``history`` in the user's own scope, which tests without an outer one need."""
    with user_scope(user, atomic=True):
        history(user, conversations=conversations, messages_each=messages_each)


# --- the same bytes as the command ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("output_format", ["jsonl", "markdown"])
def test_the_rest_export_is_the_commands_output_byte_for_byte(user, other_user, output_format):
    rich_history(user)  # tool calls, results recorded with the append and later, odd text
    rich_history(other_user)

    body = rest_export(user, output_format)

    assert body == export(user, output_format).encode()
    assert "Tool result of `call_1`, an error" in export(user, "markdown")
    assert body.count(b"\n") > 10


def test_jsonl_is_the_default(user):
    MessageFactory.create(conversation=ConversationFactory.create(user=user))

    assert rest_export(user) == rest_export(user, "jsonl") == export(user).encode()


@pytest.mark.parametrize("output_format", ["jsonl", "markdown"])
def test_another_users_data_never_appears(user, other_user, output_format):
    MessageFactory.create(conversation=ConversationFactory.create(user=user), content="mine")
    theirs = MessageFactory.create(
        conversation=ConversationFactory.create(user=other_user, title="their title"), content="their secret"
    )

    text = rest_export(user, output_format).decode()

    assert "mine" in text
    for leak in ("their secret", "their title", str(theirs.pk), str(theirs.conversation_id)):
        assert leak not in text


def test_a_user_without_conversations_gets_an_empty_jsonl_body(user, other_user):
    MessageFactory.create(conversation=ConversationFactory.create(user=other_user))

    assert rest_export(user) == b""


@pytest.mark.django_db(transaction=True)
def test_import_conversations_reads_the_rest_export_back(user, other_user):
    rich_history(user)
    MessageFactory.create(conversation=ConversationFactory.create(user=other_user))
    before = stored(user)
    exported = rest_export(user).decode()

    empty_the_database()
    stdout, _ = import_text(user, exported)

    assert "Imported 3 conversations" in stdout
    assert stored(user) == before
    assert rest_export(user).decode() == exported


# --- the answer's headers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_format", "content_type", "extension"),
    [("jsonl", "application/x-ndjson", ".jsonl"), ("markdown", "text/markdown; charset=utf-8", ".md")],
)
def test_the_answer_is_an_attachment_of_its_formats_type(
    auth_client, user, output_format, content_type, extension
):
    response = read_whole(auth_client.get(f"{EXPORT_URL}?format={output_format}"))

    assert response.status_code == HTTPStatus.OK
    assert response["Content-Type"] == content_type
    disposition = response["Content-Disposition"]
    assert disposition.startswith('attachment; filename="conversations-')
    assert disposition.endswith(f'{extension}"')
    assert "no-store" in response["Cache-Control"]


def test_any_accept_header_gets_the_export(auth_client, user):
    MessageFactory.create(conversation=ConversationFactory.create(user=user))

    response = auth_client.get(f"{EXPORT_URL}?format=markdown", HTTP_ACCEPT="text/markdown")

    assert response.status_code == HTTPStatus.OK
    assert body_of(response).startswith(b"# Conversations of ")


# --- refusals: JSON, never a 500 ------------------------------------------------------------


def test_without_a_token_it_is_401(api_client):
    response = api_client.get(EXPORT_URL)

    assert response.status_code == HTTPStatus.UNAUTHORIZED
    assert "WWW-Authenticate" in response
    assert "detail" in response.json()


@pytest.mark.parametrize("value", ["csv", "", "JSONL", "json", "jsonl,markdown"])
def test_an_unknown_format_is_a_400_naming_format(auth_client, value):
    response = auth_client.get(EXPORT_URL, {"format": value})

    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response["Content-Type"] == "application/json"
    assert list(response.json()) == ["format"]


@pytest.mark.parametrize("method", ["head", "post", "put", "patch", "delete"])
def test_other_methods_are_a_json_405(auth_client, method):
    response = getattr(auth_client, method)(EXPORT_URL)

    assert response.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert response["Allow"] == "GET, OPTIONS"
    if method != "head":
        assert "detail" in response.json()


def test_another_users_id_in_the_query_is_a_403(auth_client, other_user):
    response = auth_client.get(EXPORT_URL, {"user_id": str(other_user.pk)})

    assert response.status_code == HTTPStatus.FORBIDDEN


def test_exports_have_their_own_throttle(auth_client, other_client, monkeypatch):
    monkeypatch.setitem(SimpleRateThrottle.THROTTLE_RATES, "export", "2/hour")

    answers = [read_whole(auth_client.get(EXPORT_URL)) for _ in range(3)]

    assert [a.status_code for a in answers] == [HTTPStatus.OK, HTTPStatus.OK, HTTPStatus.TOO_MANY_REQUESTS]
    assert "Retry-After" in answers[-1]
    assert answers[-1]["Content-Type"] == "application/json"
    # Per user: another user still exports, and the rest of the API is not spent.
    assert read_whole(other_client.get(EXPORT_URL)).status_code == HTTPStatus.OK
    assert auth_client.get(reverse("conversation-list")).status_code == HTTPStatus.OK


# --- streamed, in its own snapshot and scope ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_answer_starts_before_the_export_is_read(user, audit_lines, monkeypatch):
    monkeypatch.setattr(portability, "EXPORT_FLUSH_CHARS", 4096)
    monkeypatch.setattr(portability, "EXPORT_CHUNK_SIZE", 100)
    load(user, conversations=10, messages_each=100)  # 1,000 messages of 200 characters

    response = client_for(user).get(EXPORT_URL)
    chunks = streamed(response)
    first = next(chunks)

    # Nothing more than a chunk has been rendered, and the export is still under way.
    assert 4096 <= len(first) < 8192
    assert audit_lines() == []
    if connection.vendor == "postgresql":
        # The snapshot's transaction is the generator's, open while the body is sent.
        assert connection.in_atomic_block
    rest = list(chunks)
    assert len(rest) > 50
    assert b"".join([first, *rest]) == export(user).encode()
    (line,) = [line for line in audit_lines() if line["outcome"] == "ok"][:1]
    assert (line["messages"], line["conversations"]) == (1000, 10)
    assert not connection.in_atomic_block


@pytest.mark.django_db(transaction=True)
def test_a_client_that_goes_away_ends_the_snapshot_and_is_audited(user, audit_lines, monkeypatch):
    monkeypatch.setattr(portability, "EXPORT_FLUSH_CHARS", 4096)
    load(user, conversations=10, messages_each=100)

    response = client_for(user).get(EXPORT_URL, HTTP_X_REQUEST_ID="export-1")
    next(streamed(response))
    response.close()  # what the WSGI server does when the client disconnects

    assert not connection.in_atomic_block
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%%'"
            )
            assert cursor.fetchone() == (0,)  # no session left in a transaction
    (line,) = audit_lines()
    assert line["action"] == "conversation.export"
    assert line["outcome"] == "aborted"
    assert line["user_id"] == str(user.pk)
    assert line["request_id"] == "export-1"
    assert 0 < line["messages"] < 1000


def test_one_audit_line_per_export_with_the_user_and_the_counts(user, other_user, audit_lines):
    history(user, conversations=3, messages_each=4)
    history(other_user, conversations=2, messages_each=5)

    response = client_for(user).get(f"{EXPORT_URL}?format=markdown", HTTP_X_REQUEST_ID="req-42")
    body_of(response)

    (line,) = audit_lines()
    assert line["action"] == "conversation.export"
    assert line["outcome"] == "ok"
    assert line["user_id"] == str(user.pk)
    assert line["request_id"] == "req-42"
    assert (line["format"], line["conversations"], line["messages"]) == ("markdown", 3, 12)
    assert "title" not in line
    assert "content" not in line


def test_the_command_writes_the_same_audit_line_away_from_its_data(user, capsys):
    history(user, conversations=1, messages_each=2)
    handlers = logging.getLogger(audit.AUDIT_LOGGER).handlers
    previous = [handler.setStream(sys.stdout) for handler in handlers]  # type: ignore[attr-defined]
    try:
        call_command("export_conversations", user=user.username, verbosity=0)
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setStream(old)  # type: ignore[attr-defined]

    captured = capsys.readouterr()
    assert [json.loads(line)["type"] for line in captured.out.splitlines()] == [
        "conversation",
        "message",
        "message",
    ]
    (line,) = [json.loads(line) for line in captured.err.splitlines()]
    assert (line["action"], line["outcome"], line["messages"]) == ("conversation.export", "ok", 2)


def test_staff_get_only_their_own_data(other_user):
    staff = UserFactory.create(is_staff=True, is_superuser=True)
    MessageFactory.create(conversation=ConversationFactory.create(user=other_user), content="not staff's")

    assert rest_export(staff) == b""


def test_a_database_that_fails_before_the_first_bytes_is_a_503_not_a_200_cut_short(
    auth_client, user, audit_lines, monkeypatch
):
    # The failure psycopg raises when the server goes away between two statements.
    def server_gone(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")
        yield  # a generator, as export_records is

    MessageFactory.create(conversation=ConversationFactory.create(user=user))
    monkeypatch.setattr(portability, "export_records", server_gone)

    response = auth_client.get(EXPORT_URL)

    assert response.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert "Retry-After" in response
    assert "detail" in response.json()
    (line,) = audit_lines()
    assert (line["action"], line["outcome"]) == ("conversation.export", "error")
