from django.conf import settings
from django.db import models
from django.db.models.functions import Length
from django.db.models.lookups import LessThanOrEqual
from django.utils import timezone

from .ids import uuid7

TITLE_MAX_LENGTH = 200
CONTENT_MAX_LENGTH = 10_000


class Role(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"


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

    class Meta:
        indexes = [
            # The list endpoint: a user's conversations, newest activity first (or last,
            # scanning backwards), with the id as the keyset tie-breaker.
            models.Index(
                fields=["user", "-updated_at", "-id"],
                name="conversation_user_updated_idx",
            ),
            models.Index(fields=["user", "created_at", "id"], name="conversation_user_created_idx"),
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
        ]

    def __str__(self) -> str:
        return self.title or str(self.id)


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
