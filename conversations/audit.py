"""The audit lines of the REST API's conversation and message operations (core/audit.py has
the trail itself): one line per request from ``OwnedViewSet.dispatch``, and for a 404 on an id
a security line that says whether that id exists and belongs to another user (never in the
response)."""

import logging
import time
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import Error as DatabaseError
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from core import rls
from core.audit import Scalar, as_id, outcome_for, record, request_user_id, security

from .models import Conversation, Message

logger = logging.getLogger(__name__)

# REST operations: (viewset basename, DRF action) -> audit action.
API_ACTIONS = {
    ("conversation", "list"): "conversation.list",
    ("conversation", "create"): "conversation.create",
    ("conversation", "retrieve"): "conversation.read",
    ("conversation", "partial_update"): "conversation.update",
    ("conversation", "destroy"): "conversation.delete",
    ("conversation", "history"): "history.load",
    ("conversation-message", "list"): "message.list",
    ("conversation-message", "create"): "message.append",
    ("conversation-message", "retrieve"): "message.read",
    ("conversation-message", "destroy"): "message.pop",
    ("conversation-message", "clear"): "conversation.clear",
    ("conversation-message", "tool_results"): "tool_results.record",
    ("search", "list"): "search",
}


def api_operation(
    *,
    request: HttpRequest,
    basename: str | None,
    action: str | None,
    kwargs: Mapping[str, Any],
    response: HttpResponseBase | None,
    started: float,
) -> None:
    """The audit line of one REST request to a conversation or message endpoint (and, for a
    404 on an id, its security line). ``response`` None means the view raised: a 500.

    Called by ``OwnedViewSet.dispatch`` after the request's database scope has closed. A
    failure here is logged and never changes the answer."""
    try:
        _api_operation(
            request=request,
            basename=basename,
            action=action,
            kwargs=kwargs,
            response=response,
            started=started,
        )
    except Exception:
        logger.exception("Could not write the audit line of %s %s", request.method, request.path)


def _api_operation(
    *,
    request: HttpRequest,
    basename: str | None,
    action: str | None,
    kwargs: Mapping[str, Any],
    response: HttpResponseBase | None,
    started: float,
) -> None:
    audit_action = API_ACTIONS.get((basename or "", action or ""))
    if audit_action is None:  # OPTIONS, or a method the endpoint does not have (405)
        return
    status = 500 if response is None else response.status_code
    user_id = request_user_id(request)
    if basename == "conversation-message":
        conversation_arg, message_arg = kwargs.get("conversation_pk"), kwargs.get("pk")
    else:
        conversation_arg, message_arg = kwargs.get("pk"), None
    conversation_id, message_id = as_id(conversation_arg), as_id(message_arg)
    fields: dict[str, Scalar] = {}
    if response is not None and 200 <= status < 300:
        data = getattr(response, "data", None)
        if isinstance(data, Mapping) and action == "create":
            # The new object's id; a message also names its conversation.
            if basename == "conversation-message":
                message_id = as_id(data.get("id"))
            else:
                conversation_id = as_id(data.get("id"))
        if isinstance(data, Mapping) and isinstance(data.get("results"), list):
            fields["count"] = len(data["results"])
        elif isinstance(data, Mapping) and isinstance(data.get("messages"), list):
            fields["count"] = len(data["messages"])
        if response.get("Idempotent-Replayed") == "true":
            fields["replayed"] = True
    record(
        audit_action,
        user_id=user_id,
        outcome=outcome_for(status),
        conversation_id=conversation_id,
        message_id=message_id,
        duration_ms=(time.perf_counter() - started) * 1000,
        request_id=getattr(request, "request_id", None),
        status=status,
        **fields,
    )
    if status == 404 and user_id is not None:
        malformed = (conversation_arg is not None and conversation_id is None) or (
            message_arg is not None and message_id is None
        )
        security(
            "access.not_found",
            request=request,
            status=status,
            action=audit_action,
            conversation_id=conversation_id,
            message_id=message_id,
            malformed_id=malformed,
            belongs_to_other_user=None
            if malformed
            else belongs_to_other_user(
                user_id=user_id, conversation_id=conversation_id, message_id=message_id
            ),
        )


def can_see_every_user(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether this process's database role can look across users.

    On PostgreSQL only the table owner's role may lift row-level security
    (``rls.all_users``); the serving role (``DATABASE_APP_URL``) cannot, by design, and would
    see no rows. SQLite has no row-level security."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return True
    role = settings.DATABASE_SERVING_ROLE
    return not role or connection.settings_dict.get("USER") != role


def belongs_to_other_user(
    *, user_id: str, conversation_id: str | None, message_id: str | None
) -> bool | None:
    """Whether the conversation or message id that just got a 404 exists and is another
    user's: True or False, or None when this process cannot tell (the serving role on
    PostgreSQL, or a database error). Only for the security log, never for a response."""
    if not can_see_every_user():
        return None
    try:
        with rls.all_users(reason="security audit: does a refused id belong to another user?"):
            owners: set[Any] = set()
            if conversation_id is not None:
                owners.update(
                    Conversation.objects.filter(pk=conversation_id).values_list("user_id", flat=True)
                )
            if message_id is not None:
                owners.update(Message.objects.filter(pk=message_id).values_list("user_id", flat=True))
    except DatabaseError:
        logger.warning("Security audit: could not look up the owner of a refused id", exc_info=True)
        return None
    return any(str(owner) != user_id for owner in owners)
