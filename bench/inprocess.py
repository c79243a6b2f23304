"""Figures measured inside the harness's own Django process (never the server's):

- the statements each request makes, through Django's test client with
  ``CaptureQueriesContext`` (the whole middleware and DRF stack, one request at a time);
- the agent's view: ``selectors.history_load`` and ``selectors.message_list`` against
  control P, langchain-postgres ``PostgresChatMessageHistory`` on the same messages, and
  ``history_load`` with ``max_tokens`` and in each format;
- an agent's turn of four messages appended as one batch (``services.messages_append``, one
  transaction) against four single appends (four transactions);
- deleting a large conversation through ``services.conversation_delete``;
- each hand-written data statement against its ORM twin (``statement_figures``).

Once row-level security lands, in-process ORM calls must run inside
``core.rls.user_scope(user)``; ``user_scope`` below uses it when the module exists
and says so in the results when it does not.
"""

import contextlib
import importlib
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from conversations import selectors, services
from conversations.models import Message

P_TABLE = "bench_langchain_message_store"
# A token budget no window of 50 messages reaches: the same rows as ``limit`` alone, so the
# two differ only by the running sum.
NEVER_BINDING_BUDGET = 1_000_000


def _rls_module() -> Any:
    try:
        return importlib.import_module("core.rls")
    except ImportError:
        return None


RLS = _rls_module()
USER_SCOPE_AVAILABLE = RLS is not None and hasattr(RLS, "user_scope")


@contextlib.contextmanager
def user_scope(user: User) -> Iterator[None]:
    """``core.rls.user_scope(user)`` when it exists, else nothing."""
    if USER_SCOPE_AVAILABLE:
        with RLS.user_scope(user):
            yield
    else:
        yield


def classify(sql: str) -> str:
    """The statement's part in a request. The user's lookup is ``auth`` even when it also
    sets the row-level-security identity (``set_config`` in its select list); a statement
    that only sets that identity is ``rls``."""
    text = sql.strip().upper()
    if text.startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")):
        return "transaction"
    if '"ACCOUNTS_USER"' in text and text.startswith("SELECT"):
        return "auth"
    if "SET_CONFIG" in text or text.startswith(("SET ", "RESET ")):
        return "rls"
    return "data"


def capture_request(
    client: Client, method: str, path: str, token: str, body: dict[str, Any] | None = None, **headers: str
) -> dict[str, Any]:
    """The statements one request makes, and its status, through the full stack."""
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_HOST": "127.0.0.1"}
    extra.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
    with CaptureQueriesContext(connection) as captured:
        if method == "GET":
            response = client.get(path, **extra)  # type: ignore[arg-type]
        else:
            response = client.post(
                path,
                data=json.dumps(body),
                content_type="application/json",
                **extra,  # type: ignore[arg-type]
            )
    statements = [q["sql"] for q in captured.captured_queries]
    kinds = [classify(s) for s in statements]
    return {
        "status": response.status_code,
        "etag": response.headers.get("ETag"),
        "statements": len(statements),
        "by_kind": {k: kinds.count(k) for k in ("auth", "data", "rls", "transaction")},
        "data_selects": sum(
            1
            for s, k in zip(statements, kinds, strict=True)
            if k == "data" and s.lstrip().upper().startswith("SELECT")
        ),
        "count_queries": sum(1 for s in statements if "COUNT(" in s.upper()),
        "sql": statements,
    }


def queries_per_request(
    *, token: str, conversation_id: str, append_token: str, append_conversation_id: str
) -> dict[str, dict[str, Any]]:
    client = Client()
    base = f"/api/v1/conversations/{conversation_id}"
    result = {
        "history": capture_request(client, "GET", f"{base}/history/", token),
        "list": capture_request(client, "GET", "/api/v1/conversations/", token),
        "message_list": capture_request(client, "GET", f"{base}/messages/", token),
        "append": capture_request(
            client,
            "POST",
            f"/api/v1/conversations/{append_conversation_id}/messages/",
            append_token,
            {"role": "user", "content": "How many statements does this take?"},
        ),
        "f1_history": capture_request(
            client, "GET", f"/bench/f1/conversations/{conversation_id}/history/", token
        ),
        "f1_append": capture_request(
            client,
            "POST",
            f"/bench/f1/conversations/{append_conversation_id}/messages/",
            append_token,
            {"role": "user", "content": "And the floor?"},
        ),
    }
    etag = result["history"]["etag"]
    if etag:
        result["history_304"] = capture_request(client, "GET", f"{base}/history/", token, if_none_match=etag)
    return result


def compare(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, float]]:
    """Time each call ``rounds`` times, taking turns, so that a busy machine slows them alike;
    in a new order every round, so that no call always follows the same one (the call after
    the 1,000-message lists pays for the garbage they leave: in a fixed order,
    ``history_load(50)`` measured a third slower than the same call in another format)."""
    for call in calls.values():
        call()  # warm: the pool's connection, statement caches, imports
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for name in turns(calls, rounds):
        started = time.perf_counter()
        calls[name]()
        samples[name].append((time.perf_counter() - started) * 1000)
    return summary(samples)


async def acompare(
    calls: dict[str, Callable[[], Awaitable[object]]], rounds: int
) -> dict[str, dict[str, float]]:
    """``compare`` for coroutine functions, awaited on the running loop."""
    for call in calls.values():
        await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for name in turns(calls, rounds):
        started = time.perf_counter()
        await calls[name]()
        samples[name].append((time.perf_counter() - started) * 1000)
    return summary(samples)


def turns(calls: dict[str, Any], rounds: int) -> Iterator[str]:
    """Every name once a round, shuffled anew each round (the same shuffles every run)."""
    order = list(calls)
    shuffler = random.Random(5)
    for _ in range(rounds):
        shuffler.shuffle(order)
        yield from order


def summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        name: {"median_ms": statistics.median(s), "min_ms": min(s), "runs": float(len(s))}
        for name, s in samples.items()
    }


def _langchain_messages(rows: list[Message]) -> list[Any]:
    lc_messages = importlib.import_module("langchain_core.messages")
    out: list[Any] = []
    for message in rows:
        if message.role == "user":
            out.append(lc_messages.HumanMessage(content=message.content or ""))
        else:
            calls = [
                {"name": c["function"]["name"], "args": json.loads(c["function"]["arguments"]), "id": c["id"]}
                for c in (message.tool_calls or [])
            ]
            out.append(lc_messages.AIMessage(content=message.content or "", tool_calls=calls))
    return out


def agent_comparison(*, database_url: str, user: User, conversation_id: str, repeat: int) -> dict[str, Any]:
    """Ours in-process against control P on one conversation (1,000 messages in the full run)."""
    histories = importlib.import_module("langchain_postgres")
    with user_scope(user):
        rows = list(selectors.message_list(user=user, conversation_id=conversation_id))
    with psycopg.connect(database_url) as p_conn:
        histories.PostgresChatMessageHistory.create_tables(p_conn, P_TABLE)
        p_conn.execute(f"DELETE FROM {P_TABLE} WHERE session_id = %s", [conversation_id])  # noqa: S608
        p_conn.commit()
        store = histories.PostgresChatMessageHistory(P_TABLE, conversation_id, sync_connection=p_conn)
        store.add_messages(_langchain_messages(rows))
        p_count = len(store.get_messages())

        def ours_50(**options: Any) -> Callable[[], object]:  # the selector scopes itself
            return lambda: selectors.history_load(
                user=user, conversation_id=conversation_id, limit=50, **options
            )

        def ours_all() -> object:
            with user_scope(user):
                return list(selectors.message_list(user=user, conversation_id=conversation_id))

        def ours_all_values() -> object:
            with user_scope(user):
                return list(
                    selectors.message_list(user=user, conversation_id=conversation_id).values_list(
                        "role", "content", "tool_calls"
                    )
                )

        calls: dict[str, Callable[[], object]] = {
            "ours_history_50": ours_50(),
            "ours_history_50_max_tokens": ours_50(max_tokens=NEVER_BINDING_BUDGET),
            "ours_history_50_anthropic": ours_50(format="anthropic"),
            "ours_history_50_responses": ours_50(format="responses"),
            "ours_message_list_all": ours_all,
            "ours_message_list_all_values": ours_all_values,
            "p_get_messages": store.get_messages,
        }
        in_order = getattr(selectors, "messages_in_order", None)
        if in_order is not None:  # the selector that scopes itself and checks ownership
            calls["ours_messages_in_order"] = lambda: in_order(user=user, conversation_id=conversation_id)
        figures: dict[str, Any] = {
            "messages": len(rows),
            "p_messages": p_count,
            **compare(calls, repeat),
            "user_scope": "core.rls.user_scope" if USER_SCOPE_AVAILABLE else "missing (no RLS module)",
            "database_role": connection.settings_dict.get("USER"),
        }
    return figures


TURN_MESSAGES = 4


def agent_turn(rng: random.Random) -> list[services.NewMessage]:
    """One agent turn: the user's question, two tool calls with their results, the answer."""

    def called(name: str, arguments: str, result: str) -> services.NewMessage:
        call_id = f"call_{rng.getrandbits(64):016x}"
        return services.NewMessage(
            role="assistant",
            content=None,
            tool_calls=[
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            ],
            tool_results=[{"tool_call_id": call_id, "content": result, "is_error": False}],
        )

    return [
        services.NewMessage(
            role="user", content="What's the weather in Paris, and should I book the 6pm slot?"
        ),
        called(
            "get_weather", '{"city": "Paris", "unit": "celsius"}', '{"temperature": 18, "sky": "overcast"}'
        ),
        called("search_calendar", '{"day": "today", "after": "17:00"}', '[{"slot": "18:00", "free": true}]'),
        services.NewMessage(
            role="assistant", content="18 °C and overcast; the 6pm slot is free, so book it."
        ),
    ]


def turn_comparison(*, user: User, conversation_id: str, repeat: int) -> dict[str, Any]:
    """An agent's turn of four messages: one ``messages_append`` (one transaction) against
    four ``message_append`` calls (four), on one conversation, taking turns; with the
    statements of one of each."""
    rng = random.Random(12)

    def batch() -> object:
        return services.messages_append(user=user, conversation_id=conversation_id, messages=agent_turn(rng))

    def singles() -> object:
        return [
            services.message_append(
                user=user,
                conversation_id=conversation_id,
                role=m.role,
                content=m.content,
                tool_calls=m.tool_calls,
                tool_results=m.tool_results,
            )
            for m in agent_turn(rng)
        ]

    figures: dict[str, Any] = {"messages_per_turn": TURN_MESSAGES}
    for name, call in (("batch", batch), ("singles", singles)):
        call()  # the user's identity is set by the first call: count the calls after it
        with CaptureQueriesContext(connection) as captured:
            call()
        kinds = [classify(q["sql"]) for q in captured.captured_queries]
        figures[f"{name}_statements"] = {
            "work": sum(1 for k in kinds if k in ("data", "rls")),
            "transactions": sum(1 for q in captured.captured_queries if q["sql"].upper().startswith("BEGIN")),
        }
    figures.update(compare({"batch": batch, "singles": singles}, repeat))
    figures["database_role"] = connection.settings_dict.get("USER")
    return figures


def delete_conversation(*, user: User, conversation_id: str, messages: int) -> dict[str, Any]:
    """Delete one large conversation through the service, counting its statements."""
    with CaptureQueriesContext(connection) as captured, user_scope(user):
        started = time.perf_counter()
        services.conversation_delete(user=user, conversation_id=conversation_id)
        seconds = time.perf_counter() - started
    statements = [q["sql"] for q in captured.captured_queries]
    return {
        "messages": messages,
        "seconds": seconds,
        "statements": len(statements),
        "by_kind": {k: [classify(s) for s in statements].count(k) for k in ("data", "rls", "transaction")},
        "work_statements": sum(1 for s in statements if classify(s) != "transaction"),
        "sql": [s[:300] for s in statements],
        "user_scope": "core.rls.user_scope" if USER_SCOPE_AVAILABLE else "missing (no RLS module)",
    }


# -- hand-written statements against their ORM twins ------------------------------------------

# A hand-written statement is kept only where it takes at most this share of its ORM twin's
# time per call (at least 15% less); otherwise it goes back to the ORM.
KEEP_AT_MOST = 0.85


def _time_turns(
    calls: dict[str, Callable[[], object]], rounds: int, block: Callable[[], Any] = contextlib.nullcontext
) -> dict[str, dict[str, float]]:
    """Each call timed ``rounds`` times, the calls taking turns, each inside a fresh
    ``block()`` that is not timed (a transaction to roll back, for a write)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(rounds + 1):
        for name, call in calls.items():
            with block():
                started = time.perf_counter()
                call()
                elapsed = time.perf_counter() - started
            if round_:  # the first round warms: statement caches, the pool's connection
                samples[name].append(elapsed * 1000)
    return {name: {"median_ms": statistics.median(s), "runs": float(len(s))} for name, s in samples.items()}


@contextlib.contextmanager
def _rolled_back() -> Iterator[None]:
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def statement_figures(*, user: User, conversation_id: str, rounds: int) -> dict[str, Any]:
    """Each hot data statement, hand-written against its ORM twin, on one conversation (the
    longest up to 1,000 messages): the median time per call of each, and their ratio."""
    figures: dict[str, Any] = {"rounds": rounds, "keep_at_most": KEEP_AT_MOST}
    with user_scope(user):  # the connection's identity, as an API request's lookup leaves it
        for name, (hand, orm, block) in _statement_pairs(user=user, conversation_id=conversation_id).items():
            timed = _time_turns({"hand": hand, "orm": orm}, rounds, block)
            hand_ms, orm_ms = timed["hand"]["median_ms"], timed["orm"]["median_ms"]
            figures[name] = {"hand_ms": hand_ms, "orm_ms": orm_ms, "hand_over_orm": hand_ms / orm_ms}
    return figures


def _history_window(read: AbstractContextManager[Any]) -> tuple[int | None, list[Any]]:
    """The version and every row of a history read (the statement's are taken as read)."""
    with read as window:
        return window.version, list(window.rows)


def _statement_pairs(
    *, user: User, conversation_id: str
) -> dict[str, tuple[Callable[[], object], Callable[[], object], Callable[[], Any]]]:
    """name: (the hand-written statement, its ORM twin, the block each call runs in)."""
    from accounts import statements as accounts
    from conversations import statements

    now = timezone.now()
    uid, cid = user.pk, conversation_id
    nothing = contextlib.nullcontext
    newest = statements.Newest(role="user", content="why does the pool time out here " * 4)
    return {
        # With the identity, as every API request runs it (outside any transaction).
        "user_lookup": (
            lambda: accounts.user_row(user.pk, identify=True),
            lambda: accounts.user_row_orm(user.pk, identify=True),
            nothing,
        ),
        "history_window": (
            lambda: _history_window(statements.history_rows(user_id=uid, conversation_id=cid, limit=50)),
            lambda: _history_window(
                nothing(statements.history_rows_orm(user_id=uid, conversation_id=cid, limit=50))
            ),
            nothing,
        ),
        "conversation_version": (
            lambda: statements.conversation_version(user_id=uid, conversation_id=cid),
            lambda: statements.conversation_version_orm(user_id=uid, conversation_id=cid),
            nothing,
        ),
        "append_count": (
            lambda: statements.count_messages(user_id=uid, conversation_id=cid, now=now, newest=newest),
            lambda: statements.count_messages_orm(user_id=uid, conversation_id=cid, now=now, newest=newest),
            _rolled_back,
        ),
    }
