"""The agent frameworks' adapters (issue 13) against what their users reach for today, on the
same conversation (1,000 messages in the full run), in the harness's agent process:

- the Agents SDK: ``ConversationSession.get_items(limit=50)`` against the SDK's own
  ``SQLiteSession`` on a file database holding the same items;
- LangChain: ``ConversationChatMessageHistory.aget_messages()`` (the whole conversation, as
  LangChain's interface asks) against langchain-postgres' ``aget_messages()`` on the same
  messages, in the same PostgreSQL; and ours with ``limit=50``, the window an agent sends.

Each is awaited on one event loop, the calls taking turns (``inprocess.acompare``).
"""

import asyncio
import importlib
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

from accounts.models import User
from bench import inprocess
from conversations.integrations.langchain import ConversationChatMessageHistory
from conversations.integrations.openai_agents import ConversationSession

# Not control P's table: that one holds the same messages without tool results' messages.
LC_TABLE = "bench_langchain_adapter_store"
SESSION_LIMIT = 50


def adapter_comparison(*, database_url: str, user: User, conversation_id: str, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-session-") as directory:
        return asyncio.run(
            _figures(
                database_url=database_url,
                user=user,
                conversation_id=conversation_id,
                repeat=repeat,
                sqlite_path=Path(directory) / "sessions.db",
            )
        )


async def _figures(
    *,
    database_url: str,
    user: User,
    conversation_id: str,
    repeat: int,
    sqlite_path: Path,
) -> dict[str, Any]:
    agents = importlib.import_module("agents")
    histories = importlib.import_module("langchain_postgres")
    session = ConversationSession(user=user, conversation_id=conversation_id)
    items = await session.get_items()
    sqlite_session = agents.SQLiteSession(conversation_id, db_path=sqlite_path)
    await sqlite_session.add_items(items)

    ours_all = ConversationChatMessageHistory(user=user, conversation_id=conversation_id)
    ours_window = ConversationChatMessageHistory(
        user=user, conversation_id=conversation_id, limit=SESSION_LIMIT
    )
    messages = await ours_all.aget_messages()
    async with await psycopg.AsyncConnection.connect(database_url) as lc_conn:
        await histories.PostgresChatMessageHistory.acreate_tables(lc_conn, LC_TABLE)
        await lc_conn.execute(f"DELETE FROM {LC_TABLE} WHERE session_id = %s", [conversation_id])  # noqa: S608
        await lc_conn.commit()
        lc_store = histories.PostgresChatMessageHistory(LC_TABLE, conversation_id, async_connection=lc_conn)
        await lc_store.aadd_messages(messages)
        same_data = {
            "items": len(items),
            "sqlite_items": len(await sqlite_session.get_items()),
            "messages": len(messages),
            "lc_messages": len(await lc_store.aget_messages()),
        }
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "ours_get_items_50": lambda: session.get_items(limit=SESSION_LIMIT),
            "sqlite_get_items_50": lambda: sqlite_session.get_items(limit=SESSION_LIMIT),
            "ours_aget_messages": ours_all.aget_messages,
            "ours_aget_messages_limit_50": ours_window.aget_messages,
            "lc_aget_messages": lc_store.aget_messages,
        }
        timed = await inprocess.acompare(calls, repeat)
    sqlite_session.close()
    return {**same_data, **timed}
