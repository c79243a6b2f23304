"""Data portability: one user's conversations out as JSON Lines or a Markdown transcript,
and the same JSON Lines back in. The management commands are thin wrappers of this module.

The JSON Lines format, one object per line, each conversation followed by its messages in
append order::

    {"type": "conversation", "id", "title", "created_at", "updated_at", "message_count", "version",
     "archived", "pinned", "metadata"}
    {"type": "message", "id", "conversation_id", "seq", "role", "content", "tool_calls",
     "tool_results", "token_count", "created_at"}

Timestamps are the API's (ISO 8601, UTC, microseconds, ``Z``). Idempotency keys are not
exported: they only guard against retried requests for a day.

An import validates every line as the API validates an append (tool results too, against
their message's calls) and counts each message's ``token_count`` again with this service's
tokenizer: the file's count is informative, never trusted. The conversation's ``version``
(what its ETags are made of) is kept: the file is the conversation as it was at that
version, so an ETag a client took of it is still right after a delete and a re-import.
Files written before tool results, token counts and versions existed import too: no
results, counted tokens, version 0 (what the migration that added versions gave every
conversation); files from before flags and metadata, neither. A conversation's preview is not
in the file: the import makes it from the last message, as an append would have.
"""

import json
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db.models import Count, Sum
from rest_framework import serializers
from rest_framework.settings import api_settings

from accounts.models import User
from core import audit
from core.rls import user_scope

from . import statements, tokens
from .models import Conversation, Message
from .selectors import conversation_list
from .serializers import ConversationCreateSerializer, MessageCreateSerializer, StrictBooleanField

# Rows fetched per round trip while streaming: memory stays bounded by this, not the history.
EXPORT_CHUNK_SIZE = 500
# Characters of text gathered before a chunk is handed on (written, or sent by the REST export).
EXPORT_FLUSH_CHARS = 64 * 1024
# Messages inserted per statement on import.
IMPORT_BATCH_SIZE = 500
# Errors kept for the report; the rest are only counted.
MAX_REPORTED_ERRORS = 100
# Conversation.version is a PositiveBigIntegerField.
VERSION_MAX = 2**63 - 1

CONVERSATION_FIELDS = (
    "id",
    "title",
    "created_at",
    "updated_at",
    "message_count",
    "version",
    "archived",
    "pinned",
    "metadata",
)
MESSAGE_FIELDS = (
    "id",
    "conversation_id",
    "seq",
    "role",
    "content",
    "tool_calls",
    "tool_results",
    "token_count",
    "created_at",
)

Record = dict[str, Any]


class Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def format_timestamp(value: datetime) -> str:
    """In UTC, in the API's format (``REST_FRAMEWORK["DATETIME_FORMAT"]``: microseconds and
    ``Z``). DRF's DateTimeField writes the same, ten times slower."""
    return value.astimezone(UTC).strftime(api_settings.DATETIME_FORMAT)


# --- Export --------------------------------------------------------------------------------


@dataclass
class ExportProgress:
    conversations: int = 0
    messages: int = 0
    total_conversations: int = 0
    total_messages: int = 0


@contextmanager
def _snapshot(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """One consistent, read-only view of the data for the whole block.

    The export reads conversations and messages through two cursors opened one after the
    other; on PostgreSQL a REPEATABLE READ transaction makes both see the same instant, so
    a message appended meanwhile cannot contradict its conversation's ``message_count``.
    Inside an outer transaction (tests) the level can no longer be set, and that
    transaction's view is used as it is.
    """
    connection = connections[using]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def export_records(*, user: User) -> Iterator[Record]:
    """Each of ``user``'s conversations (oldest id first) followed by its messages in append
    order, as JSON-ready records. Evaluate inside ``user_scope(user)``.

    Two streamed queries whatever the number of conversations: the messages, ordered by
    conversation then ``seq``, are merged with the conversations, ordered by id, as both go.
    """
    conversations = (
        conversation_list(user=user).order_by("id").values(*CONVERSATION_FIELDS).iterator(EXPORT_CHUNK_SIZE)
    )
    messages = (
        Message.objects.filter(user=user)
        .order_by("conversation_id", "seq")
        .values(*MESSAGE_FIELDS)
        .iterator(EXPORT_CHUNK_SIZE)
    )
    message = next(messages, None)
    for conversation in conversations:
        yield {"type": "conversation", **conversation} | _timestamps(conversation, "created_at", "updated_at")
        # Both orders agree (UUIDs compare as the database sorts them), so a message whose
        # conversation id is smaller than the current one's belongs to no listed conversation.
        while message is not None and message["conversation_id"] <= conversation["id"]:
            if message["conversation_id"] == conversation["id"]:
                yield {"type": "message", **message} | _timestamps(message, "created_at")
            message = next(messages, None)


def _timestamps(row: Record, *names: str) -> Record:
    return {name: format_timestamp(row[name]) for name in names}


def export_chunks(
    *,
    user: User,
    output_format: str,
    progress: ExportProgress | None = None,
    on_progress: Callable[[ExportProgress], None] | None = None,
    progress_every: int = 1000,
    request_id: str | None = None,
) -> Generator[str]:
    """All of ``user``'s conversations as ``jsonl`` or ``markdown`` text, in chunks of about
    ``EXPORT_FLUSH_CHARS``: what the command writes and the REST export streams.

    The generator holds its own snapshot and user scope while it runs, not its caller's: a
    streamed answer runs it after the view has returned. Closing it early (a client that went
    away) rolls the snapshot's transaction back there and then. It writes one audit line,
    ``conversation.export``, with the counts so far and the outcome: ``ok``, ``aborted``
    (closed early) or ``error``. ``progress`` (when given) is kept up to date;
    ``on_progress`` is called every ``progress_every`` messages and once at the end.
    """
    render = EXPORT_FORMATS[output_format](user)
    progress = progress if progress is not None else ExportProgress()
    started = time.perf_counter()
    outcome = "error"
    try:
        with _snapshot(), user_scope(user):
            totals = conversation_list(user=user).aggregate(count=Count("id"), messages=Sum("message_count"))
            progress.total_conversations = totals["count"]
            progress.total_messages = totals["messages"] or 0
            buffer = [render.start(progress)]
            size = len(buffer[0])
            for record in export_records(user=user):
                text = render(record)
                buffer.append(text)
                size += len(text)
                if record["type"] == "conversation":
                    progress.conversations += 1
                else:
                    progress.messages += 1
                    if on_progress and progress.messages % progress_every == 0:
                        on_progress(progress)
                if size >= EXPORT_FLUSH_CHARS:
                    yield "".join(buffer)
                    buffer, size = [], 0
            if size:
                yield "".join(buffer)
        outcome = "ok"
    except GeneratorExit:
        outcome = "aborted"
        raise
    finally:
        audit.record(
            "conversation.export",
            user_id=user.pk,
            outcome=outcome,
            request_id=request_id,
            duration_ms=(time.perf_counter() - started) * 1000,
            format=output_format,
            conversations=progress.conversations,
            messages=progress.messages,
        )
    if on_progress and (progress.messages % progress_every or not progress.messages):
        on_progress(progress)  # the final count, unless it was just reported


def conversations_export(
    *,
    user: User,
    out: Writable,
    output_format: str,
    on_progress: Callable[[ExportProgress], None] | None = None,
    progress_every: int = 1000,
) -> ExportProgress:
    """Write all of ``user``'s conversations to ``out`` as ``jsonl`` or ``markdown``
    (``export_chunks``, which streams from the database in its own user scope)."""
    progress = ExportProgress()
    chunks = export_chunks(
        user=user,
        output_format=output_format,
        progress=progress,
        on_progress=on_progress,
        progress_every=progress_every,
    )
    with closing(chunks):  # a write that fails (a closed pipe) ends the snapshot at once
        for chunk in chunks:
            out.write(chunk)
    return progress


class _Writer:
    """Renders records as text (``EXPORT_FORMATS``)."""

    def __init__(self, user: User) -> None:
        self.user = user

    def start(self, progress: ExportProgress) -> str:
        """The text before the first record."""
        return ""

    def __call__(self, record: Record) -> str:
        raise NotImplementedError


# Characters that JSON leaves unescaped but that some line readers (str.splitlines,
# JavaScript) take for line breaks; in JSON text they can only occur inside strings.
_LINE_BREAKS_ESCAPED = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class _JsonLinesWriter(_Writer):
    def __call__(self, record: Record) -> str:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        return line.translate(_LINE_BREAKS_ESCAPED) + "\n"


class _MarkdownWriter(_Writer):
    """A transcript for people: one section per conversation, one subsection per turn, the
    content quoted so that Markdown inside a message cannot break the document's outline."""

    def start(self, progress: ExportProgress) -> str:
        return (
            f"# Conversations of {self.user.get_username()}\n\n"
            f"{progress.total_conversations} conversations, {progress.total_messages} messages.\n"
        )

    def __call__(self, record: Record) -> str:
        if record["type"] == "conversation":
            title = " ".join((record["title"] or "Untitled conversation").split())
            return (
                f"\n---\n\n## {title}\n\n"
                f"Conversation `{record['id']}`, created {record['created_at']}, "
                f"last active {record['updated_at']}, {record['message_count']} messages.\n"
            )
        parts = [f"\n### {record['seq']}. {record['role']}, {record['created_at']}\n\n"]
        content = record["content"]
        if content is None:
            parts.append("_(no text)_\n")
        elif content == "":
            parts.append("_(empty)_\n")
        else:
            parts.append("".join((f"> {line}" if line else ">") + "\n" for line in content.split("\n")))
        for call in record["tool_calls"] or []:
            parts.append(
                f"\nTool call `{call['function']['name']}` (id `{call['id']}`):\n\n"
                + _fenced(call["function"]["arguments"])
            )
        for result in record["tool_results"] or []:
            error = ", an error" if result["is_error"] else ""
            parts.append(
                f"\nTool result of `{result['tool_call_id']}`{error}:\n\n" + _fenced(result["content"])
            )
        return "".join(parts)


EXPORT_FORMATS: dict[str, type[_Writer]] = {"jsonl": _JsonLinesWriter, "markdown": _MarkdownWriter}


def _fenced(text: str) -> str:
    """``text`` as a code block whose fence no run of backticks inside it can close."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}\n{text}\n{fence}\n"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest


# --- Import --------------------------------------------------------------------------------


class ConversationImportSerializer(ConversationCreateSerializer):
    """A conversation line: the API's rules for a new conversation, plus what the export
    keeps (its id and times)."""

    id = serializers.UUIDField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    message_count = serializers.IntegerField(min_value=0, required=False)
    version = serializers.IntegerField(min_value=0, max_value=VERSION_MAX, default=0)
    archived = StrictBooleanField(default=False)
    pinned = StrictBooleanField(default=False)


class MessageImportSerializer(MessageCreateSerializer):
    """A message line: the API's rules for a new message (role, content, tool_calls,
    tool_results), plus what the export keeps (its id, conversation, position and time).
    ``token_count`` is not read: the import counts it again."""

    id = serializers.UUIDField()
    conversation_id = serializers.UUIDField()
    seq = serializers.IntegerField(min_value=1)
    created_at = serializers.DateTimeField()


class ImportConflict(Exception):
    """An id in the file already exists elsewhere in the database."""


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    conversations_imported: int = 0
    messages_imported: int = 0
    conversations_skipped: int = 0
    conversations_refused: int = 0
    # The first MAX_REPORTED_ERRORS bad lines; error_count counts them all.
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0
    warnings: list[LineError] = field(default_factory=list)

    def error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(line, message))


@dataclass
class _Group:
    """A conversation line and the message lines that follow it."""

    line: int
    conversation: Record | None  # None: the conversation line itself was bad
    messages: list[Record] = field(default_factory=list)
    message_ids: set[uuid.UUID] = field(default_factory=set)
    bad: bool = False


def conversations_import(
    *,
    user: User,
    lines: Iterable[str | bytes],
    on_progress: Callable[[ImportReport], None] | None = None,
    progress_every: int = 100,
) -> ImportReport:
    """Import the JSON Lines of ``conversations_export`` into ``user``'s account.

    Every line is validated with the API's serializers; a conversation with any bad line is
    not imported, and each bad line is reported with its number. Each conversation is
    imported in a transaction of its own, with its ids, ``seq`` and timestamps. A
    conversation that the user already has is skipped, so a second run creates nothing; an
    id that exists in another user's data is refused (ImportConflict), never merged.

    One conversation's messages are held in memory at a time.
    """
    report = ImportReport()
    group: _Group | None = None
    for number, raw in enumerate(lines, start=1):
        try:
            record = _parse_line(raw)
        except _BadLine as exc:
            # Whatever the line was meant to be, the conversation it sits in is incomplete.
            report.error(number, str(exc))
            if group is not None:
                group.bad = True
            continue
        if record is None:
            continue
        if record["type"] == "conversation":
            if group is not None:
                _finish(group, user=user, report=report)
                if on_progress and _groups_done(report) % progress_every == 0:
                    on_progress(report)
            group = _Group(
                line=number, conversation=_validated(number, record, ConversationImportSerializer, report)
            )
            group.bad = group.conversation is None
        elif group is None:
            report.error(number, "a message line before any conversation line")
        else:
            _add_message(group, number, record, report)
    if group is not None:
        _finish(group, user=user, report=report)
    if on_progress:
        on_progress(report)
    return report


def _groups_done(report: ImportReport) -> int:
    return report.conversations_imported + report.conversations_skipped + report.conversations_refused


class _BadLine(Exception):
    pass


def _parse_line(raw: str | bytes) -> Record | None:
    """The line's JSON object, or None for a blank line; raises _BadLine."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise _BadLine("not UTF-8 text") from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise _BadLine(f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise _BadLine("not a JSON object")
    if record.get("type") not in {"conversation", "message"}:
        raise _BadLine('type: must be "conversation" or "message"')
    return record


def _validated(
    number: int, record: Record, serializer_class: type[serializers.Serializer[Any]], report: ImportReport
) -> Record | None:
    serializer = serializer_class(data=record)
    if serializer.is_valid():
        return dict(serializer.validated_data)
    for path, message in _flatten_errors(serializer.errors):
        report.error(number, f"{path}: {message}" if path else message)
    return None


def _flatten_errors(errors: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(errors, dict):
        for key, value in errors.items():
            name = "" if key == "non_field_errors" else str(key)
            yield from _flatten_errors(value, f"{path}.{name}" if path and name else path or name)
    elif isinstance(errors, list):
        for item in errors:
            yield from _flatten_errors(item, path)
    else:
        yield path, str(errors)


def _add_message(group: _Group, number: int, record: Record, report: ImportReport) -> None:
    message = _validated(number, record, MessageImportSerializer, report)
    if message is None:
        group.bad = True
        return
    problems = []
    conversation = group.conversation
    if conversation is not None and message["conversation_id"] != conversation["id"]:
        problems.append(f"conversation_id: {message['conversation_id']} is not the conversation above it")
    if not group.bad:
        # Positions are checked only while the group is intact: after a bad line they are
        # off by one, and that line is what needs fixing.
        expected_seq = len(group.messages) + 1
        if message["seq"] != expected_seq:
            problems.append(f"seq: expected {expected_seq} (messages must follow in append order)")
        elif group.messages and message["created_at"] < group.messages[-1]["created_at"]:
            problems.append("created_at: earlier than the message before it")
    if message["id"] in group.message_ids:
        problems.append(f"id: {message['id']} appears twice")
    for problem in problems:
        report.error(number, problem)
    if problems:
        group.bad = True
    group.message_ids.add(message["id"])
    if not group.bad:
        group.messages.append(message)


def _finish(group: _Group, *, user: User, report: ImportReport) -> None:
    conversation = group.conversation
    if conversation is not None and not group.bad:
        expected = conversation.get("message_count")
        if expected is not None and expected != len(group.messages):
            report.error(
                group.line,
                f"message_count: {expected}, but {len(group.messages)} message lines follow "
                "(is the file truncated?)",
            )
            group.bad = True
    if conversation is None or group.bad:
        report.conversations_refused += 1
        return
    try:
        existing_count = conversation_import(user=user, conversation=conversation, messages=group.messages)
    except ImportConflict as exc:
        report.error(group.line, f"conversation {conversation['id']} not imported: {exc}")
        report.conversations_refused += 1
        return
    if existing_count is None:
        report.conversations_imported += 1
        report.messages_imported += len(group.messages)
        return
    report.conversations_skipped += 1
    if existing_count != len(group.messages):
        report.warnings.append(
            LineError(
                group.line,
                f"conversation {conversation['id']} already exists with {existing_count} messages, "
                f"the file has {len(group.messages)}: left as it is",
            )
        )


def _preview(newest: Record | None) -> Record:
    if newest is None:
        return {}
    cut = statements.Newest(role=newest["role"], content=newest["content"]).preview_content
    return {
        "preview_role": newest["role"],
        "preview_content": cut,
        "preview_created_at": newest["created_at"],
    }


def conversation_import(*, user: User, conversation: Record, messages: list[Record]) -> int | None:
    """Create one of ``user``'s conversations with its messages as they were exported: ids,
    ``seq``, timestamps, tool results, the conversation's version; each ``token_count`` is
    counted here. One transaction. ``messages`` are validated and in append order
    (``seq`` 1, 2, …), as ``conversations_import`` checks.

    Returns None when created; when ``user`` already has a conversation with that id,
    changes nothing and returns its ``message_count``. Raises ``ImportConflict`` when the
    conversation's or a message's id is taken by another conversation or another user.
    """
    last_activity = max(
        [conversation["created_at"], conversation["updated_at"]]
        + [message["created_at"] for message in messages[-1:]]
    )
    newest = messages[-1] if messages else None
    # An atomic block of its own (a savepoint when nested) on both backends, so that a refused
    # conversation leaves nothing behind even inside a caller's transaction on SQLite, where
    # user_scope adds none.
    with transaction.atomic(), user_scope(user, atomic=True):
        existing = (
            conversation_list(user=user)
            .filter(pk=conversation["id"])
            .values_list("message_count", flat=True)
            .first()
        )
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                Conversation.objects.create(
                    id=conversation["id"],
                    user=user,
                    title=conversation["title"],
                    created_at=conversation["created_at"],
                    # The invariants of an append: updated_at is never before the latest
                    # message, and message_count is the latest seq.
                    updated_at=last_activity,
                    message_count=len(messages),
                    version=conversation["version"],
                    archived=conversation["archived"],
                    pinned=conversation["pinned"],
                    metadata=conversation["metadata"],
                    # The preview an append of the last message would have left.
                    **_preview(newest),
                )
        except IntegrityError as exc:
            raise ImportConflict("its id already exists in another user's data") from exc
        for start in range(0, len(messages), IMPORT_BATCH_SIZE):
            batch = messages[start : start + IMPORT_BATCH_SIZE]
            taken = (
                Message.objects.filter(pk__in=[message["id"] for message in batch], user=user)
                .values_list("pk", "conversation_id")
                .first()
            )
            if taken is not None:
                raise ImportConflict(f"message id {taken[0]} already exists in conversation {taken[1]}")
            try:
                with transaction.atomic():
                    Message.objects.bulk_create(
                        Message(
                            id=message["id"],
                            conversation_id=conversation["id"],
                            user=user,
                            seq=message["seq"],
                            role=message["role"],
                            content=message["content"],
                            tool_calls=message["tool_calls"],
                            tool_results=message["tool_results"],
                            token_count=tokens.message_tokens(
                                message["content"], message["tool_calls"], message["tool_results"]
                            ),
                            created_at=message["created_at"],
                        )
                        for message in batch
                    )
            except IntegrityError as exc:
                raise ImportConflict("one of its message ids already exists in another user's data") from exc
    return None
