"""LangChain's ``BaseChatMessageHistory`` over one user's conversation.

Writes go through ``services`` (one transaction per ``add_messages``) after the REST API's own
validation (``MessageCreateSerializer``, ``ToolResultsRecordSerializer``), reads through
``selectors``, so a LangChain agent, the REST API and the Python API see the same rows.

The mapping onto the data model, which has user and assistant messages only:

- ``HumanMessage`` is a user message, ``AIMessage`` an assistant message whose ``tool_calls``
  become stored calls (``args`` as a JSON string) and whose ``invalid_tool_calls`` keep their
  raw ``args`` string.
- A ``ToolMessage`` is a tool result recorded on the assistant message that made its call,
  whether that message is in the same ``add_messages`` or stored earlier; ``status="error"``
  is ``is_error``. Read back, results follow their message, in call order.
- ``SystemMessage`` and every other kind are refused: system prompts are the agent's
  configuration, not history.
- List content is stored as the text of its text blocks, joined as ``message.text`` joins
  them; an ``AIMessage``'s blocks that repeat its own tool calls are left out (they are the
  calls), any other block (an image, reasoning) is refused rather than dropped unsaid.
- Not stored: message ``id``, ``name``, ``additional_kwargs``, ``response_metadata``,
  ``usage_metadata``, a ``ToolMessage``'s ``artifact`` and an invalid call's ``error`` text.
"""

import functools
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call

from accounts.models import User
from core.rls import user_scope

from .. import selectors, services
from ..history_formats import StoredMessage
from ..models import Role
from ..serializers import MessageCreateSerializer, ToolResultsRecordSerializer

Body = dict[str, Any]


P = ParamSpec("P")
R = TypeVar("R")


def _returns_its_connection(method: Callable[P, R]) -> Callable[P, R]:
    """Give the thread's database connection back to the pool when the call is done, in a
    thread other than the main one and outside a transaction. LangChain runs a sync chain's
    steps in its own thread pools (``RunnableWithMessageHistory`` reads the history in one),
    threads that Django's request cycle never closes: their connections would stay checked
    out until the pool ran dry."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        finally:
            if threading.current_thread() is not threading.main_thread() and not connection.in_atomic_block:
                connection.close()

    return wrapper


class MessageRefused(ValueError):
    """A LangChain message the conversation cannot hold; nothing of its batch was written."""


class ConversationChatMessageHistory(BaseChatMessageHistory):
    """The history of ``user``'s conversation ``conversation_id``, which must exist (create it
    with ``services.conversation_create`` or ``POST /api/v1/conversations/``).

    ``messages`` is the whole conversation in append order, as LangChain's contract has it.
    With ``limit`` and/or ``max_tokens`` it is a window instead: the newest messages exactly
    as ``selectors.history_load`` gives them to a model (``limit`` defaults to its 50), with
    its rules (a call without a recorded result is left out except in the newest message,
    a message with neither text nor calls is left out) and OpenAI's format, which has no
    error flag: every ``ToolMessage`` of a window has ``status="success"``.

    Constructing one touches no database, so it can be made inside async code. Another
    user's conversation raises ``Conversation.DoesNotExist`` on every read and write.
    """

    def __init__(
        self,
        *,
        user: User,
        conversation_id: uuid.UUID | str,
        limit: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.user = user
        self.conversation_id = conversation_id
        self.limit = limit
        self.max_tokens = max_tokens

    @property
    @_returns_its_connection
    def messages(self) -> list[BaseMessage]:
        if self._windowed:
            return _from_window(selectors.history_load(**self._window_arguments()))
        return _from_rows(selectors.message_contents(user=self.user, conversation_id=self.conversation_id))

    @messages.setter
    @_returns_its_connection
    def messages(self, messages: list[BaseMessage]) -> None:
        """Replace the whole conversation with ``messages``, in one transaction."""
        with transaction.atomic(), user_scope(self.user):
            self.clear()
            self.add_messages(messages)

    async def aget_messages(self) -> list[BaseMessage]:
        if self._windowed:
            return _from_window(await selectors.ahistory_load(**self._window_arguments()))
        rows = await selectors.amessage_contents(user=self.user, conversation_id=self.conversation_id)
        return _from_rows(rows)

    @_returns_its_connection
    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Store ``messages`` in one transaction: all of them or, when one is refused
        (``MessageRefused``, ``ToolResultsInvalid``, ``ToolResultAlreadyRecorded``), none."""
        bodies, late_results = _bodies(messages)
        if not bodies and not late_results:
            return
        new = [_validated_message(body, position) for position, body in bodies]
        # A savepoint when the caller has a transaction open: a refusal undoes this call only.
        with transaction.atomic(), user_scope(self.user):
            if late_results:
                self._record_late_results(late_results)
            for start in range(0, len(new), services.BATCH_MAX_MESSAGES):
                services.messages_append(
                    user=self.user,
                    conversation_id=self.conversation_id,
                    messages=new[start : start + services.BATCH_MAX_MESSAGES],
                )

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await sync_to_async(self.add_messages)(messages)

    @_returns_its_connection
    def clear(self) -> None:
        """Delete every message; the conversation itself (id, title, metadata) stays."""
        services.conversation_clear(user=self.user, conversation_id=self.conversation_id)

    async def aclear(self) -> None:
        await services.aconversation_clear(user=self.user, conversation_id=self.conversation_id)

    @property
    def _windowed(self) -> bool:
        return self.limit is not None or self.max_tokens is not None

    def _window_arguments(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "conversation_id": self.conversation_id,
            "limit": self.limit if self.limit is not None else selectors.HISTORY_DEFAULT_LIMIT,
            "max_tokens": self.max_tokens,
            "format": "openai",
        }

    def _record_late_results(self, results: list[Body]) -> None:
        """Record results whose calls were stored by an earlier ``add_messages``, on the
        newest message that made each call, one ``tool_results_record`` per message."""
        owners = self._messages_with_calls({result["tool_call_id"] for result in results})
        by_message: dict[uuid.UUID, list[Body]] = {}
        for result in results:
            by_message.setdefault(owners[result["tool_call_id"]], []).append(result)
        for message_id, its_results in by_message.items():
            services.tool_results_record(
                user=self.user,
                conversation_id=self.conversation_id,
                message_id=message_id,
                tool_results=_validated_results(its_results),
            )

    def _messages_with_calls(self, call_ids: set[str]) -> dict[str, uuid.UUID]:
        """The id of the newest stored message making each call, newest first: the calls
        a ``ToolMessage`` answers are nearly always in the last message or two."""
        owners: dict[str, uuid.UUID] = {}
        with user_scope(self.user):
            rows = (
                selectors.message_list(user=self.user, conversation_id=self.conversation_id)
                .filter(role=Role.ASSISTANT, tool_calls__isnull=False)
                .order_by("-seq")
                .values_list("pk", "tool_calls")
            )
            for message_id, calls in rows.iterator(chunk_size=20):
                for call in calls or ():
                    owners.setdefault(call["id"], message_id)
                if call_ids <= owners.keys():
                    return owners
            selectors.ensure_conversation(
                user=self.user, conversation_id=self.conversation_id, found_rows=bool(owners)
            )
        unknown = sorted(call_ids - owners.keys())
        raise MessageRefused(
            f"A ToolMessage answers the tool call {unknown[0]!r}, which no AIMessage of this "
            "conversation (stored, or earlier in this add_messages) made."
        )


def _bodies(messages: Iterable[BaseMessage]) -> tuple[list[tuple[int, Body]], list[Body]]:
    """The messages as REST message bodies with their positions, in order, each
    ``ToolMessage`` put on the body that made its call; and the results whose calls are not
    in this batch."""
    bodies: list[tuple[int, Body]] = []
    calls_made: dict[str, Body] = {}  # call id -> the newest body in the batch making it
    late_results: list[Body] = []
    for position, message in enumerate(messages):
        if isinstance(message, HumanMessage):
            bodies.append((position, {"role": Role.USER, "content": _text(message, position)}))
        elif isinstance(message, AIMessage):
            calls = _stored_calls(message, position)
            body = {"role": Role.ASSISTANT, "content": _text(message, position), "tool_calls": calls}
            bodies.append((position, body))
            calls_made.update((call["id"], body) for call in calls or ())
        elif isinstance(message, ToolMessage):
            result = {
                "tool_call_id": message.tool_call_id,
                "content": _text(message, position),
                "is_error": message.status == "error",
            }
            if (maker := calls_made.get(message.tool_call_id)) is not None:
                maker["tool_results"] = [*(maker.get("tool_results") or ()), result]
            else:
                late_results.append(result)
        else:
            raise MessageRefused(_refusal(message, position))
    return bodies, late_results


def _refusal(message: BaseMessage, position: int) -> str:
    why = (
        "system prompts are agent configuration, not history: keep them in the prompt"
        if message.type == "system"
        else "a conversation holds human, AI and tool messages only"
    )
    return f"messages[{position}] is a {type(message).__name__} and cannot be stored: {why}."


def _text(message: BaseMessage, position: int) -> str:
    """String content as it is; list content as its text blocks joined (``message.text``).
    An AIMessage's tool-call blocks are its ``tool_calls`` again, so they are left out."""
    if isinstance(message.content, str):
        return message.content
    own_calls = {call["id"] for call in _all_calls(message)} if isinstance(message, AIMessage) else set()
    parts: list[str] = []
    for block in message.content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif block.get("type") not in ("tool_use", "tool_call") or block.get("id") not in own_calls:
            raise MessageRefused(
                f"messages[{position}] has a content block of type {block.get('type')!r}: "
                "a conversation stores text, so only text blocks can be stored."
            )
    return "".join(parts)


def _all_calls(message: AIMessage) -> list[Any]:
    return [*message.tool_calls, *message.invalid_tool_calls]


def _stored_calls(message: AIMessage, position: int) -> list[Body] | None:
    """The message's calls as stored: a valid call's ``args`` as a JSON object string, an
    invalid call's raw ``args`` string as it came."""
    stored: list[Body] = []
    for call in _all_calls(message):
        if call.get("id") is None:
            raise MessageRefused(
                f"messages[{position}] has a tool call without an id: results are recorded by call id."
            )
        arguments = call.get("args") if call.get("type") == "invalid_tool_call" else _json(call, position)
        stored.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call.get("name"), "arguments": arguments or ""},
            }
        )
    return stored or None


def _json(call: Any, position: int) -> str:
    try:
        return json.dumps(call["args"], ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise MessageRefused(
            f"messages[{position}] has a tool call {call['id']!r} whose args are not JSON: {error}"
        ) from None


def _validated_message(body: Body, position: int) -> services.NewMessage:
    """The body through the REST API's own validation of an append."""
    serializer = MessageCreateSerializer(data=body)
    if not serializer.is_valid():
        raise MessageRefused(f"messages[{position}] cannot be stored: {json.dumps(serializer.errors)}")
    return services.NewMessage(**serializer.validated_data)


def _validated_results(results: list[Body]) -> list[Body]:
    serializer = ToolResultsRecordSerializer(data={"tool_results": results})
    if not serializer.is_valid():
        raise MessageRefused(f"Tool results cannot be stored: {json.dumps(serializer.errors)}")
    validated: list[Body] = serializer.validated_data["tool_results"]
    return validated


def _from_rows(rows: Iterable[selectors.MessageContent]) -> list[BaseMessage]:
    return [
        langchain_message
        for row in rows
        for langchain_message in _langchain_messages(
            StoredMessage(
                role=row.role,
                content=row.content,
                tool_calls=row.tool_calls,
                tool_results=row.tool_results,
                token_count=0,
            )
        )
    ]


def _from_window(items: list[selectors.ChatMessage]) -> list[BaseMessage]:
    """A ``history_load`` window in OpenAI's format, each ``tool`` item folded back onto the
    assistant message before it (which made its call) as the result it was."""
    folded: list[tuple[selectors.ChatMessage, list[Body]]] = []
    for item in items:
        if item["role"] == "tool":
            folded[-1][1].append({"tool_call_id": item["tool_call_id"], "content": item["content"]})
        else:
            folded.append((item, []))
    return [
        langchain_message
        for item, results in folded
        for langchain_message in _langchain_messages(
            StoredMessage(
                role=item["role"],
                content=item["content"],
                tool_calls=item.get("tool_calls"),
                tool_results=results or None,
                token_count=0,
            )
        )
    ]


def _langchain_messages(message: StoredMessage) -> list[BaseMessage]:
    """One stored message as LangChain messages: the message, then a ``ToolMessage`` per
    recorded result. Calls whose arguments are not a JSON object are ``invalid_tool_calls``
    (LangChain's ``args`` must be a dict)."""
    if message.role == Role.USER:
        return [HumanMessage(content=message.content or "")]
    calls, invalid_calls = [], []
    for call in message.tool_calls or ():
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        if (args := _json_object(arguments)) is not None:
            calls.append(tool_call(name=name, args=args, id=call["id"]))
        else:
            invalid_calls.append(invalid_tool_call(name=name, args=arguments, id=call["id"], error=None))
    results: list[BaseMessage] = [
        ToolMessage(
            content=result["content"],
            tool_call_id=result["tool_call_id"],
            status="error" if result.get("is_error") else "success",
        )
        for result in message.tool_results or ()
    ]
    reply = AIMessage(content=message.content or "", tool_calls=calls, invalid_tool_calls=invalid_calls)
    return [reply, *results]


def _json_object(arguments: str) -> dict[str, Any] | None:
    """The arguments as a dict when they are a JSON object (NaN and Infinity are not JSON)."""
    try:
        parsed = json.loads(arguments, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
