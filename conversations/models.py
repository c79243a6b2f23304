from typing import Any

from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import Length
from django.db.models.lookups import Exact, LessThanOrEqual
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from .ids import uuid7

TITLE_MAX_LENGTH = 200
CONTENT_MAX_LENGTH = 10_000
# A conversation's preview holds the first this many code points of its newest message.
PREVIEW_MAX_LENGTH = 200
# The contract's (and OpenAI's) bounds on a conversation's metadata.
METADATA_MAX_KEYS = 16
METADATA_KEY_MAX_LENGTH = 64
METADATA_VALUE_MAX_LENGTH = 512


class Role(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


class JSONType(models.Func):
    """The type of a JSON value (``'object'``, ``'array'``, …), for a check constraint."""

    function = "JSON_TYPE"  # SQLite's
    output_field = models.CharField()

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> tuple[str, Any]:
        return self.as_sql(compiler, connection, function="JSONB_TYPEOF", **extra_context)


class Conversation(models.Model):
    """A chat between one user and the assistant; the user owns it and all its messages."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Indexed as the leading column of the composite indexes below; a lone index would be
    # redundant and one more to maintain on every append.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="conversations",
        db_index=False,
    )
    title = models.CharField(max_length=TITLE_MAX_LENGTH, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Time of the latest activity: an append moves it to the message's created_at.
    updated_at = models.DateTimeField(default=timezone.now)
    # Also the sequence number of the latest message: appends assign message_count + 1.
    message_count = models.PositiveIntegerField(default=0)
    # One more with every change to the conversation or its messages (an append, tool
    # results, an undo, a clear, a rename): what versions its ETags, since counts and times
    # can come back to where they were (an undo then another append). A database default
    # too, like token_count's: rows written by SQL (bulk loads) get it.
    version = models.PositiveBigIntegerField(default=0, db_default=0, editable=False)
    # The owner's flags and their own key/value pairs: set by PATCH, they move neither
    # updated_at nor anything but the version.
    archived = models.BooleanField(default=False, db_default=False)
    pinned = models.BooleanField(default=False, db_default=False)
    metadata = models.JSONField(default=dict, db_default={})
    # The newest message (its role, its content cut to PREVIEW_MAX_LENGTH code points, its
    # created_at), written in the same transaction as every change to the messages
    # (statements.count_messages), so that a page of the list reads it with its rows. All
    # null when the conversation has no messages.
    preview_role = models.CharField(max_length=16, choices=Role.choices, null=True, blank=True)  # noqa: DJ001
    preview_content = models.TextField(null=True, blank=True)  # noqa: DJ001
    preview_created_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The list endpoint: a user's conversations that are (or are not) archived, newest
            # activity first (or last, scanning backwards), with the id as the keyset
            # tie-breaker. A list without a pinned filter walks these to the page's limit;
            # pinned=false walks them too, skipping the few pinned rows.
            models.Index(
                fields=["user", "archived", "-updated_at", "-id"],
                name="conversation_list_updated_idx",
            ),
            models.Index(
                fields=["user", "archived", "created_at", "id"], name="conversation_list_created_idx"
            ),
            # pinned=true: partial, so only the few pinned rows pay for them on every append.
            models.Index(
                fields=["user", "archived", "-updated_at", "-id"],
                name="conversation_pin_updated_idx",
                condition=models.Q(pinned=True),
            ),
            models.Index(
                fields=["user", "archived", "created_at", "id"],
                name="conversation_pin_created_idx",
                condition=models.Q(pinned=True),
            ),
            # Across users by time (retention's prune, an operator's "created since"): without
            # a user to lead with, the composites above cannot serve these.
            models.Index(fields=["updated_at"], name="conversation_updated_idx"),
            models.Index(fields=["created_at"], name="conversation_created_idx"),
        ]
        constraints = [
            # Referenced by the (conversation_id, user_id) foreign key of Message, which makes
            # the database reject a message whose user is not its conversation's user.
            models.UniqueConstraint(fields=["id", "user"], name="conversation_id_user_uniq"),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("title"), TITLE_MAX_LENGTH),
                name="conversation_title_max_length",
            ),
            # What the model promises of the preview and metadata, where it is cheap to check
            # (the metadata's keys and values are the serializer's to check).
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("preview_content"), PREVIEW_MAX_LENGTH),
                name="conversation_preview_max_length",
            ),
            models.CheckConstraint(
                condition=models.Q(preview_role__isnull=True) | models.Q(preview_role__in=Role.values),
                name="conversation_preview_role_valid",
            ),
            # A preview is a role and a time, with content or not; no role, nothing at all.
            models.CheckConstraint(
                condition=models.Q(preview_role__isnull=False, preview_created_at__isnull=False)
                | models.Q(
                    preview_role__isnull=True, preview_created_at__isnull=True, preview_content__isnull=True
                ),
                name="conversation_preview_complete",
            ),
            # An empty conversation has no preview.
            models.CheckConstraint(
                condition=models.Q(message_count__gt=0) | models.Q(preview_role__isnull=True),
                name="conversation_preview_needs_messages",
            ),
            models.CheckConstraint(
                condition=Exact(JSONType("metadata"), "object"),
                name="conversation_metadata_object",
            ),
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)

    @property
    def preview(self) -> dict[str, Any] | None:
        """The contract's ``preview``: None without messages."""
        if self.preview_role is None:
            return None
        return {
            "role": self.preview_role,
            "content": self.preview_content,
            "created_at": self.preview_created_at,
        }


class ConversationListVersion(models.Model):
    """One row per user: a number that moves with every change to any of the user's
    conversations (a create, a delete, any change to a row, which every change to its
    messages is too), for the conversation list's ETag. Kept by triggers on the conversation
    table (migration 0011), so that no path can forget it: the services, retention's prune,
    a user's deletion, an import, the admin, SQL of an operator.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    version = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"conversation list version {self.version} of {self.user_id}"


class Message(models.Model):
    """One turn of a conversation, ordered by ``seq``, its position in append order."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # Indexed as the leading column of the (conversation, seq) unique constraint.
    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.CASCADE,
        related_name="messages",
        db_index=False,
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    # Assigned under the conversation's row lock, so append order never depends on the
    # clock's resolution: two messages in the same microsecond still have distinct seqs.
    seq = models.PositiveIntegerField(editable=False)
    role = models.CharField(max_length=16, choices=Role.choices)
    # NULL and "" differ: an assistant turn that only calls tools has no content at all.
    content = models.TextField(null=True, blank=True)  # noqa: DJ001
    tool_calls = models.JSONField(null=True, blank=True)
    # The answers to tool_calls, one per call at most, recorded with the append or later.
    tool_results = models.JSONField(null=True, blank=True)
    # What the message costs a model (conversations/tokens.py), grown as results come in.
    token_count = models.PositiveIntegerField(default=0, db_default=0)
    # What the items of an agent framework's session (conversations/integrations) that this
    # message was stored from held besides the fields above (their ids, status, the shape of
    # their content), so that the session gives them back as they came: {"message": {…},
    # "calls": {call id: {…}}, "results": {call id: {…}}}, each optional. Null for a message
    # written through the REST API, which never shows it.
    item_shapes = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            # Also the index for "messages of one conversation in order", both directions.
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_conversation_seq_uniq"),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="message_role_valid"),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("content"), CONTENT_MAX_LENGTH),
                name="message_content_max_length",
            ),
            models.CheckConstraint(
                condition=models.Q(tool_calls__isnull=True) | models.Q(role=Role.ASSISTANT),
                name="message_tool_calls_assistant_only",
            ),
            models.CheckConstraint(
                condition=models.Q(tool_results__isnull=True) | models.Q(tool_calls__isnull=False),
                name="message_tool_results_need_calls",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_conversation_time_idx"),
            models.Index(fields=["conversation", "role", "seq"], name="message_conversation_role_idx"),
            # Messages of every user since a time (an operator's query, across users).
            models.Index(fields=["created_at"], name="message_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.seq} of {self.conversation_id}"


class IdempotencyKey(models.Model):
    """An ``Idempotency-Key`` a user sent with an append, and what that append created.

    ``message_ids`` are plain UUIDs rather than foreign keys on purpose: a foreign key to
    Message would stop Django from deleting a conversation's messages with one DELETE
    (it would load them to cascade). The row goes away with its conversation instead; a
    replay finds the messages gone after an undo or a clear, and says so (a 409).
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    key = models.CharField(max_length=255)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    # SHA-256 of the request body in canonical JSON: a reused key must come with the same body.
    fingerprint = models.CharField(max_length=64)
    # The ids of what the append created, in order: one, or a batch's.
    message_ids = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_user_key_uniq"),
        ]

    def __str__(self) -> str:
        return self.key
