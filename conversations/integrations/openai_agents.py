"""The OpenAI Agents SDK's ``Session`` over one user's conversation.

``ConversationSession(user=…, conversation_id=…)`` goes where ``SQLiteSession`` would:
``Runner.run(agent, input, session=session)``. Writes go through ``services`` after the REST
API's own validation (``MessageCreateSerializer``, ``ToolResultsRecordSerializer``), reads
through the scoped ``selectors.message_list``, so the agent, the REST API and the Python API
see the same rows. Making one touches no database, so it can be made inside async code.
Another user's conversation raises ``Conversation.DoesNotExist`` on every read and write.

How the SDK's input items map onto the data model (user and assistant messages; a tool's
result is recorded on the assistant message that made the call):

- A ``message`` item of role ``user`` or ``assistant`` is a message. List content is stored
  as the text of its ``input_text``, ``output_text`` and ``refusal`` parts, joined with
  nothing between them (as the SDK's and OpenAI's ``output_text`` join them).
- ``function_call`` items are the calls of an assistant message: those that follow an
  assistant ``message`` item or one another (one model response) are one message, with that
  text. Calls that begin an ``add_items`` go on from the newest stored message when it is an
  assistant message whose calls have no results yet (``services.tool_calls_add``): one
  response written in two ``add_items``, or calls that ``pop_item`` took back and the SDK puts
  back. A call after a result or a user message starts an assistant message without text.
- A ``function_call_output`` is the result recorded on the message that made its call, in the
  same ``add_items`` or an earlier one (the newest message making that call). An output whose
  call no message made is refused, and so is a second output for one call.
- Left out: ``reasoning`` items, a model's own scratch work, which model APIs do not need
  from earlier turns; every reasoning model emits them, so refusing them would refuse those
  models. With them goes the ``id`` of the items of the same model response: the Responses
  API refuses an item id whose reasoning item is missing.
- Refused with ``ItemRefused`` (nothing of that ``add_items`` is written): ``system`` and
  ``developer`` messages (instructions are the agent's configuration, not history); content
  parts other than text (images, files, audio); every other item type (the calls and outputs
  of hosted and built-in tools: web and file search, computer use, shell, code interpreter,
  image generation, MCP, custom tools; item references; compaction items); and what the REST
  API refuses (content over 10,000 code points, an empty user message, …).

What an item holds besides those fields (its ``type`` key or the lack of one, ``id``,
``status``, ``annotations``, ``logprobs``, its content's split into parts) is kept in
``Message.item_shapes``, so ``get_items`` gives back the items that were added, in order, with
two exceptions: a message's outputs come back after all of its calls, in the order of the
calls (the order the SDK adds them in), and a message written through the REST API comes back
in the ``responses`` history format's shapes (a result's ``is_error`` is not part of them).
An item may hold at most 16 KiB of JSON besides its text (more is refused).

``get_items`` does not use ``history_load``: a model's window leaves out pending calls and
messages without text, and has a cap of its own, which would make ``limit`` and ``pop_item``
inexact; here every stored message gives at least one item, and ``limit`` counts items.
``pop_item`` takes back the last item: a result (``services.tool_result_pop``), a call
(``services.tool_call_pop``) or the whole message (``services.message_pop``).
``clear_session`` deletes every message; the conversation (its id, its title) stays.
"""

import asyncio
import json
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar, cast

from agents.items import TResponseInputItem
from agents.memory import SessionSettings
from agents.memory.session_settings import coerce_session_settings, resolve_session_limit
from asgiref.sync import sync_to_async

from accounts.models import User
from core.rls import user_scope

from .. import selectors, services, sizes
from ..models import Message, Role
from ..serializers import MessageCreateSerializer, ToolResultsRecordSerializer
from ..tool_results import ToolResultAlreadyRecorded

Item = dict[str, Any]
T = TypeVar("T")

# What one item may hold besides the fields a message stores (JSON bytes): its ids, status,
# annotations. Bounded like everything else a message holds.
ITEM_SHAPE_MAX_BYTES = 16 * 1024

# The content parts whose text a message can hold, with the key of that text.
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "refusal": "refusal"}
_CALL_FIELDS = ("call_id", "name", "arguments")


class ItemRefused(ValueError):
    """An item the conversation cannot hold; nothing of its ``add_items`` was written."""


class ConversationSession:
    """The Agents SDK session of ``user``'s conversation ``conversation_id``, which must exist
    (``create``/``acreate`` make one); ``session_id`` is the conversation's id."""

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        *,
        user: User,
        conversation_id: uuid.UUID | str,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> None:
        self.user = user
        self.conversation_id = conversation_id
        self.session_id = str(conversation_id)
        # As SQLiteSession has it: settings always present, a dict checked and turned into them.
        self.session_settings = (
            coerce_session_settings(session_settings) if session_settings is not None else SessionSettings()
        )

    @classmethod
    def create(
        cls, *, user: User, title: str = "", session_settings: SessionSettings | dict[str, Any] | None = None
    ) -> Self:
        """A session of a new conversation of ``user``'s."""
        conversation = services.conversation_create(user=user, title=title)
        return cls(user=user, conversation_id=conversation.pk, session_settings=session_settings)

    @classmethod
    async def acreate(
        cls, *, user: User, title: str = "", session_settings: SessionSettings | dict[str, Any] | None = None
    ) -> Self:
        conversation = await services.aconversation_create(user=user, title=title)
        return cls(user=user, conversation_id=conversation.pk, session_settings=session_settings)

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest ``limit`` items (``session_settings.limit`` when not given; None: all),
        oldest first."""
        items = await sync_to_async(items_read)(
            user=self.user,
            conversation_id=self.conversation_id,
            limit=resolve_session_limit(limit, self.session_settings),
        )
        return cast(list[TResponseInputItem], items)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Store ``items`` in one transaction: all of them or, when one is refused
        (``ItemRefused``, ``ToolResultAlreadyRecorded``), none."""
        await _settled(
            sync_to_async(items_add)(
                user=self.user, conversation_id=self.conversation_id, items=cast(list[Item], items)
            )
        )

    async def pop_item(self) -> TResponseInputItem | None:
        """Delete the newest item and return it; None when there is none."""
        item = await _settled(sync_to_async(item_pop)(user=self.user, conversation_id=self.conversation_id))
        return cast(TResponseInputItem | None, item)

    async def clear_session(self) -> None:
        await _settled(services.aconversation_clear(user=self.user, conversation_id=self.conversation_id))


async def _settled(write: Awaitable[T]) -> T:
    """Await ``write`` to its end even when the caller is cancelled meanwhile, then pass the
    cancellation on, as the SDK's own sessions do: a thread cannot be stopped halfway, so a
    caller told "cancelled" early could not know whether its write landed (and retry it)."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError as cancelled:
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                continue
        if not task.cancelled():
            task.exception()  # retrieved: a failure after the cancellation is not logged as lost
        raise cancelled from None


def items_read(*, user: User, conversation_id: uuid.UUID | str, limit: int | None) -> list[Item]:
    """The conversation's latest ``limit`` items (None: all), oldest first."""
    if limit is not None and limit < 0:
        raise ValueError("limit must be at least 0, or None for every item")
    # Every message gives at least one item, so the newest ``limit`` messages hold the newest
    # ``limit`` items.
    rows = selectors.message_contents(user=user, conversation_id=conversation_id, newest=limit)
    items = [part.item for row in rows for part in _parts(row)]
    return items if limit is None else items[max(len(items) - limit, 0) :]


def items_add(*, user: User, conversation_id: uuid.UUID | str, items: Sequence[Mapping[str, Any]]) -> None:
    """``ConversationSession.add_items``, in the caller's thread."""
    if not items:
        return
    with user_scope(user, atomic=True):
        newest = _newest_if_calls_join(user=user, conversation_id=conversation_id, items=items)
        drafts, late = _plan(items, newest)
        new = [draft.validated() for draft in drafts if draft.stored is None]
        for joined in drafts:
            if joined.stored is None:
                continue
            services.tool_calls_add(
                user=user,
                conversation_id=conversation_id,
                message_id=joined.stored.pk,
                tool_calls=joined.validated_calls(),
                call_shapes=joined.shapes["calls"],
            )
            late = [*joined.outputs, *late]
        if late:
            _record_late_outputs(user=user, conversation_id=conversation_id, outputs=late)
        for start in range(0, len(new), services.BATCH_MAX_MESSAGES):
            services.messages_append(
                user=user,
                conversation_id=conversation_id,
                messages=new[start : start + services.BATCH_MAX_MESSAGES],
            )


def item_pop(*, user: User, conversation_id: uuid.UUID | str) -> Item | None:
    """``ConversationSession.pop_item``, in the caller's thread."""
    with user_scope(user, atomic=True):
        newest = selectors.message_list(user=user, conversation_id=conversation_id).order_by("-seq").first()
        if newest is None:
            selectors.ensure_conversation(user=user, conversation_id=conversation_id, found_rows=False)
            return None
        parts = _parts(newest)
        last = parts[-1]
        if last.call_id is not None and last.kind == "result":
            services.tool_result_pop(
                user=user, conversation_id=conversation_id, message_id=newest.pk, tool_call_id=last.call_id
            )
        elif last.call_id is not None and len(parts) > 1:
            services.tool_call_pop(
                user=user, conversation_id=conversation_id, message_id=newest.pk, tool_call_id=last.call_id
            )
        else:
            services.message_pop(user=user, conversation_id=conversation_id, message_id=newest.pk)
        return last.item


# Reading: a stored message as items.


@dataclass(frozen=True, slots=True)
class _Part:
    """One item of a stored message, and what of the message it is."""

    kind: str  # "message" (its text), "call" or "result"
    call_id: str | None
    item: Item


def _parts(message: Message | selectors.MessageContent) -> list[_Part]:
    """The message's items in order: its text, its calls, their results in call order. A
    message written through the REST API (no shapes) has the ``responses`` format's items,
    and its text item whenever it has content, so that no message gives none."""
    shapes: dict[str, Any] = message.item_shapes or {}
    parts: list[_Part] = []
    if message.content is not None and (
        message.item_shapes is None or "message" in shapes or not message.tool_calls
    ):
        parts.append(
            _Part("message", None, _message_item(message.role, message.content, shapes.get("message")))
        )
    for call in message.tool_calls or ():
        parts.append(_Part("call", call["id"], _call_item(call, shapes.get("calls", {}).get(call["id"]))))
    for result in message.tool_results or ():
        call_id = result["tool_call_id"]
        parts.append(_Part("result", call_id, _output_item(result, shapes.get("results", {}).get(call_id))))
    return parts


def _message_item(role: str, content: str, shape: Item | None) -> Item:
    if shape is None:
        return {"type": "message", "role": role, "content": content}
    return {**shape, "role": role, "content": _text_back(content, shape.get("content"))}


def _call_item(call: Item, shape: Item | None) -> Item:
    function = call["function"]
    return {
        **(shape or {"type": "function_call"}),
        "call_id": call["id"],
        "name": function["name"],
        "arguments": function["arguments"],
    }


def _output_item(result: Item, shape: Item | None) -> Item:
    if shape is None:
        return {
            "type": "function_call_output",
            "call_id": result["tool_call_id"],
            "output": result["content"],
        }
    return {
        **shape,
        "call_id": result["tool_call_id"],
        "output": _text_back(result["content"], shape.get("output")),
    }


def _text_back(text: str, parts: list[Item] | None) -> str | list[Item]:
    """The content as it came: the string, or its parts with each one's text cut back out of
    ``text`` (the shape holds each part's length where its text was)."""
    if parts is None or sum(part[_TEXT_PARTS[part["type"]]] for part in parts) != len(text):
        return text
    rebuilt: list[Item] = []
    start = 0
    for part in parts:
        key = _TEXT_PARTS[part["type"]]
        rebuilt.append({**part, key: text[start : start + part[key]]})
        start += part[key]
    return rebuilt


# Writing: items as the messages and results they add.


@dataclass(frozen=True, slots=True)
class _Output:
    """A function_call_output as the result it records, with its position and shape."""

    index: int
    result: Item
    shape: Item

    @property
    def call_id(self) -> str:
        return str(self.result["tool_call_id"])


@dataclass
class _Draft:
    """A message being made from items (a REST body plus its items' shapes); or, with
    ``stored``, the newest stored message that this ``add_items``'s first calls join."""

    index: int  # of its first item, for errors
    role: str
    content: str | None
    stored: Message | None = None
    tool_calls: list[Item] = field(default_factory=list)  # new ones only
    outputs: list[_Output] = field(default_factory=list)
    shapes: dict[str, Any] = field(default_factory=dict)

    def makes(self, call_id: str) -> bool:
        stored_calls = self.stored.tool_calls or [] if self.stored is not None else []
        return any(call["id"] == call_id for call in [*stored_calls, *self.tool_calls])

    def answered(self, call_id: str) -> bool:
        return any(output.call_id == call_id for output in self.outputs)

    def validated(self) -> services.NewMessage:
        """The message through the REST API's own validation of an append."""
        shapes = dict(self.shapes)
        if self.outputs:
            shapes["results"] = {output.call_id: output.shape for output in self.outputs}
        data = self._valid([output.result for output in self.outputs] or None)
        return services.NewMessage(**data, item_shapes=shapes)

    def validated_calls(self) -> list[Item]:
        """The calls that join ``stored``, through the same validation of the message they
        make with its own calls."""
        calls: list[Item] = self._valid(None)["tool_calls"]
        return calls[len(calls) - len(self.tool_calls) :]

    def _valid(self, results: list[Item] | None) -> dict[str, Any]:
        stored_calls = self.stored.tool_calls or [] if self.stored is not None else []
        body = {
            "role": self.role,
            "content": self.content,
            "tool_calls": [*stored_calls, *self.tool_calls] or None,
            "tool_results": results,
        }
        serializer = MessageCreateSerializer(data=body)
        if not serializer.is_valid():
            raise ItemRefused(f"Item {self.index} cannot be stored: {json.dumps(serializer.errors)}")
        return dict(serializer.validated_data)


def _plan(items: Sequence[Mapping[str, Any]], newest: Message | None) -> tuple[list[_Draft], list[_Output]]:
    """The messages the items make, in order, each output put on the message of its call;
    and the outputs of calls stored before. Leading calls join ``newest`` when given (a
    stored assistant message whose calls have no results yet)."""
    turn: _Draft | None = None  # the assistant message that a function_call joins
    if newest is not None:
        turn = _Draft(0, Role.ASSISTANT, newest.content, stored=newest)
    drafts: list[_Draft] = [turn] if turn is not None else []
    late: list[_Output] = []
    calls_made: dict[str, _Draft] = {}  # call id -> the newest draft making it
    after_reasoning = False  # in a model response whose reasoning item was left out
    for index, item in enumerate(items):
        kind = _kind(item, index)
        if kind == "reasoning":
            after_reasoning = True
            continue
        if kind == "message":
            role = item.get("role")
            if role not in (Role.USER, Role.ASSISTANT):
                raise ItemRefused(
                    f"Item {index} is a {role!r} message: instructions are the agent's configuration, "
                    "not history (a conversation holds user and assistant messages)."
                )
            after_reasoning = after_reasoning and role == Role.ASSISTANT
            text, parts = _flattened(item.get("content"), index, "content")
            draft = _Draft(index, str(role), text)
            draft.shapes["message"] = _shape(
                item, ("role",), index, parts, text_key="content", strip_id=after_reasoning
            )
            drafts.append(draft)
            turn = draft if role == Role.ASSISTANT else None
        elif kind == "function_call":
            call_id, name, arguments = (_string(item, key, index) for key in _CALL_FIELDS)
            if turn is None or turn.makes(call_id):
                turn = _Draft(index, Role.ASSISTANT, None)
                drafts.append(turn)
            turn.tool_calls.append(
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            )
            turn.shapes.setdefault("calls", {})[call_id] = _shape(
                item, _CALL_FIELDS, index, strip_id=after_reasoning
            )
            calls_made[call_id] = turn
        else:  # function_call_output
            after_reasoning, turn = False, None
            call_id = _string(item, "call_id", index)
            output, parts = _flattened(item.get("output"), index, "output")
            result = {"tool_call_id": call_id, "content": output, "is_error": False}
            new = _Output(index, result, _shape(item, ("call_id",), index, parts, text_key="output"))
            if (maker := calls_made.get(call_id)) is None:
                late.append(new)
            elif maker.answered(call_id):
                raise ToolResultAlreadyRecorded(
                    f"Item {index}: the tool call {call_id!r} already has its output."
                )
            else:
                maker.outputs.append(new)
    return [draft for draft in drafts if draft.stored is None or draft.tool_calls], late


def _newest_if_calls_join(
    *, user: User, conversation_id: uuid.UUID | str, items: Sequence[Mapping[str, Any]]
) -> Message | None:
    """The newest stored message when the items begin with a call (after any reasoning) and
    that message is an assistant message whose calls have no results yet: the call goes on
    from it (one model response's calls written in two ``add_items``, or a call that
    ``pop_item`` took back and the SDK puts back), which keeps the items in their order."""
    first = next(
        (item for item in items if not (isinstance(item, Mapping) and item.get("type") == "reasoning")), None
    )
    if not (isinstance(first, Mapping) and first.get("type") == "function_call"):
        return None
    newest = selectors.message_list(user=user, conversation_id=conversation_id).order_by("-seq").first()
    if newest is None or newest.role != Role.ASSISTANT or newest.tool_results:
        return None
    return newest


def _kind(item: Mapping[str, Any], index: int) -> str:
    """``message``, ``function_call``, ``function_call_output`` or ``reasoning``; anything
    else is refused."""
    if not isinstance(item, Mapping):
        raise ItemRefused(f"Item {index} is not an object.")
    kind = item.get("type", "message" if "role" in item else None)
    if kind not in ("message", "function_call", "function_call_output", "reasoning"):
        raise ItemRefused(
            f"Item {index} is of type {kind!r}: a conversation holds messages, function calls and "
            "their outputs, so the calls and outputs of hosted or built-in tools, item references "
            "and compaction items cannot be stored."
        )
    return str(kind)


def _string(item: Mapping[str, Any], key: str, index: int) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ItemRefused(f"Item {index}'s {key!r} is not a string.")
    return value


def _flattened(content: Any, index: int, key: str) -> tuple[str, list[Item] | None]:
    """The text of a string or of a list of text parts, and the parts with each one's text
    replaced by its length (None for a string)."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise ItemRefused(f"Item {index}'s {key!r} is neither a string nor a list of parts.")
    texts: list[str] = []
    parts: list[Item] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
        text_key = _TEXT_PARTS.get(kind) if isinstance(part, Mapping) and isinstance(kind, str) else None
        if text_key is None or not isinstance(part.get(text_key), str):
            raise ItemRefused(
                f"Item {index} has a part of type {kind!r}: a conversation stores text, so only "
                f"{', '.join(_TEXT_PARTS)} parts can be stored."
            )
        texts.append(part[text_key])
        parts.append({**part, text_key: len(part[text_key])})
    return "".join(texts), parts


def _shape(
    item: Mapping[str, Any],
    stored: Sequence[str],
    index: int,
    parts: list[Item] | None = None,
    *,
    text_key: str | None = None,
    strip_id: bool = False,
) -> Item:
    """What the item holds besides the ``stored`` fields; its ``text_key`` (content, output)
    becomes its parts' shapes, or None for a string."""
    shape = {name: value for name, value in item.items() if name not in stored}
    if text_key is not None:
        shape[text_key] = parts
    if strip_id:
        shape.pop("id", None)
    try:
        size = sizes.rendered_size(shape)
    except (TypeError, ValueError) as error:
        raise ItemRefused(f"Item {index} holds a value that is not JSON: {error}") from None
    if size > ITEM_SHAPE_MAX_BYTES:
        raise ItemRefused(
            f"Item {index} holds {size} bytes besides its text; at most {ITEM_SHAPE_MAX_BYTES} can be stored."
        )
    return shape


def _record_late_outputs(*, user: User, conversation_id: uuid.UUID | str, outputs: list[_Output]) -> None:
    """Record outputs whose calls an earlier ``add_items`` stored, on the newest message making
    each call, one ``tool_results_record`` per message."""
    owners = _call_owners(user=user, conversation_id=conversation_id, outputs=outputs)
    by_message: dict[uuid.UUID, list[_Output]] = {}
    for output in outputs:
        by_message.setdefault(owners[output.result["tool_call_id"]], []).append(output)
    for message_id, its_outputs in by_message.items():
        serializer = ToolResultsRecordSerializer(
            data={"tool_results": [output.result for output in its_outputs]}
        )
        if not serializer.is_valid():
            raise ItemRefused(
                f"Item {its_outputs[0].index} cannot be stored: {json.dumps(serializer.errors)}"
            )
        services.tool_results_record(
            user=user,
            conversation_id=conversation_id,
            message_id=message_id,
            tool_results=serializer.validated_data["tool_results"],
            result_shapes={output.result["tool_call_id"]: output.shape for output in its_outputs},
        )


def _call_owners(
    *, user: User, conversation_id: uuid.UUID | str, outputs: list[_Output]
) -> dict[str, uuid.UUID]:
    """The id of the newest stored message making each output's call, read newest first: the
    calls an output answers are nearly always in the last message or two."""
    wanted = {output.result["tool_call_id"] for output in outputs}
    owners: dict[str, uuid.UUID] = {}
    rows = (
        selectors.message_list(user=user, conversation_id=conversation_id)
        .filter(role=Role.ASSISTANT, tool_calls__isnull=False)
        .order_by("-seq")
        .values_list("pk", "tool_calls")
    )
    for message_id, calls in rows.iterator(chunk_size=20):
        for call in calls or ():
            owners.setdefault(call["id"], message_id)
        if wanted <= owners.keys():
            return owners
    selectors.ensure_conversation(user=user, conversation_id=conversation_id, found_rows=bool(owners))
    unknown = next(output for output in outputs if output.result["tool_call_id"] not in owners)
    raise ItemRefused(
        f"Item {unknown.index} is the output of the call {unknown.result['tool_call_id']!r}, which no "
        "function_call of this conversation (stored, or earlier in this add_items) made."
    )
