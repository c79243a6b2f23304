"""Benchmark data: users, conversations and messages loaded with PostgreSQL ``COPY``.

Every row satisfies what the models and the database promise: ``seq`` is 1..n within each
conversation, ``message_count`` is n, ``updated_at`` is the last message's ``created_at``,
``created_at`` never decreases in ``seq`` order, a message's user is its conversation's
user, and ``role`` is ``user`` or ``assistant`` (odd ``seq`` is the user, even the
assistant). Conversation lengths follow a log-normal distribution clipped to 1..1,000
(median about 20, mean about 50: a few long conversations hold many of the messages);
content is 20 to 2,000 characters, mostly short; about 3% of assistant turns call tools, and
nine calls in ten have their result recorded. ``token_count`` is the service's own count
(``conversations.tokens``, one batch of the tokenizer per chunk of rows) and a conversation's
``version`` is its message count (one change per append), and its preview is its newest
message's (filled after the messages, in the same transaction).

Messages are written in global ``created_at`` order, as a live service would have
appended them, so a conversation's rows are spread over the heap as they would be in
production rather than packed together.

When the harness can connect as a superuser (``scripts/with-postgres`` makes one, the
``postgres`` role), the load runs with ``session_replication_role = replica``: foreign-key
triggers are skipped (check constraints and unique indexes still apply) and row-level
security does not apply to a superuser, so ``COPY`` works once RLS is on. ``verify`` then
checks every invariant above, foreign keys included, with one query per table.

Run alone: ``python -m bench.loaddata --messages 1000000`` (needs ``DATABASE_URL``).
"""

import argparse
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
import toktok
from psycopg import sql

MAX_CONVERSATION_LENGTH = 1000
MIN_CONTENT = 20
MAX_CONTENT = 2000
TOOL_CALL_SHARE = 0.03
TOOL_RESULT_SHARE = 0.9  # of the calls; the rest were never answered
# Messages counted by the tokenizer at a time (one call, one thread).
TOKEN_BATCH = 5_000
DAY_US = 86_400 * 1_000_000

_VOCABULARY = (
    "the be to of and a in that have it for not on with he as you do at this but his by from they we say "
    "her she or an will my one all would there their what so up out if about who get which go me when "
    "make can like time no just him know take people into year your good some could them see other than "
    "then now look only come its over think also back after use two how our work first well way even new "
    "want because any these give day most us model token python function error server request database "
    "query index latency cache thread process memory vector embedding prompt context window agent tool "
    "retry timeout deploy container schema migration transaction lock row column table page cursor json "
    "please thanks could you explain why does this fail here is the stack trace I tried that already "
    "sure let me walk through it step by step first check the configuration then restart the service"
)
WORDS = _VOCABULARY.split()


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    user_id: str
    length: int
    stage: str


@dataclass
class StageResult:
    conversations: list[ConversationInfo]
    messages: int
    seconds: float
    superuser: bool


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def admin_url(database_url: str) -> str:
    """The same server and database as the superuser ``postgres`` (trust auth on the
    throwaway cluster), unless ``BENCH_ADMIN_DATABASE_URL`` names another."""
    explicit = os.environ.get("BENCH_ADMIN_DATABASE_URL")
    if explicit:
        return explicit
    parts = urlsplit(database_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"postgres@{host}:{parts.port}" if parts.port else f"postgres@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def connect_for_load(database_url: str) -> tuple[psycopg.Connection[tuple[object, ...]], bool]:
    """An autocommit connection to load with, and whether it is a superuser's."""
    try:
        conn = psycopg.connect(admin_url(database_url), connect_timeout=5, autocommit=True)
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        if row is not None and row[0]:
            return conn, True
        conn.close()
    except psycopg.OperationalError:
        pass
    return psycopg.connect(database_url, autocommit=True), False


def uuid7_text(unix_ms: int, rng: random.Random) -> str:
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def timestamp_text(us: int) -> str:
    seconds, micro = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}+00"


def copy_escape(text: str) -> str:
    """Text for PostgreSQL's COPY text format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def conversation_lengths(rng: random.Random, total: int, count: int) -> list[int]:
    """``count`` lengths in 1..1,000 that add up to ``total``, log-normally skewed."""
    if not count <= total <= count * MAX_CONVERSATION_LENGTH:
        raise ValueError(f"cannot split {total} messages into {count} conversations")
    raw = [rng.lognormvariate(3.0, 1.25) for _ in range(count)]
    scale = total / sum(raw)
    lengths = [min(MAX_CONVERSATION_LENGTH, max(1, round(x * scale))) for x in raw]
    diff = total - sum(lengths)
    while diff:
        i = rng.randrange(count)
        if diff > 0 and lengths[i] < MAX_CONVERSATION_LENGTH:
            step = min(diff, MAX_CONVERSATION_LENGTH - lengths[i], max(1, diff // 8))
            lengths[i] += step
            diff -= step
        elif diff < 0 and lengths[i] > 1:
            step = min(-diff, lengths[i] - 1, max(1, -diff // 8))
            lengths[i] -= step
            diff += step
    return lengths


class ContentPool:
    """Random text sliced from one long string: cheap per row, realistic lengths."""

    def __init__(self, rng: random.Random, size: int = 1 << 21) -> None:
        parts: list[str] = []
        length = 0
        while length < size + MAX_CONTENT:
            sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 18)))
            sentence = sentence[0].upper() + sentence[1:] + rng.choice((". ", "? ", "! ", ".\n\n"))
            parts.append(sentence)
            length += len(sentence)
        self.text = "".join(parts)
        self.rng = rng

    def take(self, median: float, sigma: float) -> str:
        n = round(self.rng.lognormvariate(math.log(median), sigma))
        n = min(MAX_CONTENT, max(MIN_CONTENT, n))
        start = self.rng.randrange(len(self.text) - n)
        return self.text[start : start + n]


# (name, arguments, result) of the tools the assistant calls.
TOOLS = (
    ("get_weather", '{"city": "Paris", "unit": "celsius"}', '{"temperature": 18, "sky": "overcast"}'),
    (
        "search_docs",
        '{"query": "connection pool timeout", "top_k": 5}',
        '[{"title": "Pool sizing", "score": 0.91}, {"title": "Timeouts", "score": 0.84}]',
    ),
    ("run_sql", '{"sql": "SELECT count(*) FROM orders WHERE status = \'open\'"}', "[[1284]]"),
)


@dataclass(frozen=True)
class ToolCall:
    """One call of an assistant message, as stored, and its result (None: never answered)."""

    calls: str  # the tool_calls JSON
    results: str | None  # the tool_results JSON
    texts: tuple[str, ...]  # what the message's token_count counts besides its content


def tool_call(rng: random.Random) -> ToolCall:
    name, arguments, result = rng.choice(TOOLS)
    call_id = f"call_{rng.getrandbits(64):016x}"
    function = {"name": name, "arguments": arguments}
    calls = json.dumps([{"id": call_id, "type": "function", "function": function}])
    if rng.random() >= TOOL_RESULT_SHARE:
        return ToolCall(calls, None, (name, arguments))
    results = json.dumps([{"tool_call_id": call_id, "content": result, "is_error": False}])
    return ToolCall(calls, results, (name, arguments, result))


def token_counts(texts: list[list[str]]) -> list[int]:
    """Each message's ``token_count`` (the sum over its texts), as the service counts it."""
    from conversations.tokens import ENCODING

    flat = [text for message in texts for text in message]
    counts = iter(toktok.batch_count(flat, ENCODING, threads=1) if flat else [])
    return [sum(next(counts) for _ in message) for message in texts]


def _table(conn: psycopg.Connection[tuple[object, ...]], model: str) -> tuple[str, dict[str, str]]:
    """The table name and field-to-column names of ``conversations.<model>`` (from Django
    when it is set up, so a renamed column does not silently break the load)."""
    try:
        from django.apps import apps

        meta = apps.get_model("conversations", model)._meta
        return meta.db_table, {f.name: f.column for f in meta.concrete_fields}
    except Exception:  # noqa: BLE001 (Django not set up: the default names)
        table = f"conversations_{model.lower()}"
        names = ["id", "user", "title", "created_at", "updated_at", "message_count", "version"]
        names += ["conversation", "seq", "role", "content", "tool_calls", "tool_results", "token_count"]
        return table, {n: (f"{n}_id" if n in {"user", "conversation"} else n) for n in names}


def _user_table() -> tuple[str, str]:
    try:
        from django.contrib.auth import get_user_model

        meta = get_user_model()._meta
        return meta.db_table, meta.pk.column if meta.pk is not None else "id"
    except Exception:  # noqa: BLE001 (Django not set up: the default names)
        return "accounts_user", "id"


def load_stage(
    database_url: str,
    *,
    user_ids: Sequence[str],
    messages: int,
    conversations: int,
    seed: int,
    stage: str,
    now_us: int | None = None,
    user_weights: Sequence[float] | None = None,
) -> StageResult:
    """Add ``conversations`` conversations holding ``messages`` messages in all, owned by
    ``user_ids`` (weighted by ``user_weights``), in two COPYs."""
    started = time.perf_counter()
    rng = random.Random(seed)
    lengths = conversation_lengths(rng, messages, conversations)
    now_us = now_us if now_us is not None else time.time_ns() // 1000
    window_end = now_us - 3_600 * 1_000_000
    window_start = window_end - 180 * DAY_US

    conv_rows: list[tuple[int, str, str, int, int, int]] = []  # created, id, user, n, updated, idx
    msg_keys: list[tuple[int, int, int]] = []  # (created_at us, conversation index, seq)
    infos: list[ConversationInfo] = []
    users = list(user_ids)
    for index, n in enumerate(lengths):
        times: list[int] = []
        t = 0
        for seq in range(1, n + 1):
            if seq > 1:
                if seq % 2 == 0:  # the assistant answers within seconds
                    t += int(rng.expovariate(1 / 6) * 1_000_000) + 1
                else:  # the user comes back after a minute, sometimes days later
                    gap = rng.expovariate(1 / 70) if rng.random() > 0.03 else rng.uniform(3_600, 3 * 86_400)
                    t += int(gap * 1_000_000) + 1
            times.append(t)
        span = times[-1]
        if span > window_end - window_start:
            factor = (window_end - window_start) / (span + 1)
            times = [int(x * factor) + i for i, x in enumerate(times)]
            span = times[-1]
        first = rng.randint(window_start, window_end - span)
        created = first - rng.randint(1, 30) * 1_000_000
        user = rng.choices(users, weights=user_weights)[0] if user_weights else rng.choice(users)
        conv_id = uuid7_text(created // 1000, rng)
        conv_rows.append((created, conv_id, user, n, first + span, index))
        infos.append(ConversationInfo(id=conv_id, user_id=user, length=n, stage=stage))
        msg_keys.extend((first + x, index, seq) for seq, x in enumerate(times, start=1))
    msg_keys.sort()
    conv_rows.sort()
    progress(
        f"load[{stage}]: planned {len(lengths):,} conversations, {messages:,} messages "
        f"in {time.perf_counter() - started:.1f} s"
    )

    superuser = _copy_in_one_transaction(database_url, conv_rows, msg_keys, rng, stage, started)
    seconds = time.perf_counter() - started
    progress(f"load[{stage}]: {messages:,} messages committed in {seconds:.1f} s (superuser={superuser})")
    return StageResult(conversations=infos, messages=messages, seconds=seconds, superuser=superuser)


def _copy_in_one_transaction(
    database_url: str,
    conv_rows: list[tuple[int, str, str, int, int, int]],
    keys: list[tuple[int, int, int]],
    rng: random.Random,
    stage: str,
    started: float,
) -> bool:
    """COPY the conversations and their messages in one transaction; returns whether it ran
    as a superuser (with foreign-key triggers and row-level security out of the way)."""
    conn, superuser = connect_for_load(database_url)
    try:
        with conn.transaction():
            if superuser:
                conn.execute("SET LOCAL session_replication_role = replica")
            rebuilt = _drop_gin_indexes_for(conn, len(keys))
            _copy_conversations(conn, conv_rows, rng)
            _copy_messages(conn, keys, conv_rows, rng, stage, started)
            _fill_previews(conn, [conv_id for _, conv_id, _, _, _, _ in conv_rows])
            if rebuilt:
                build_started = time.perf_counter()
                conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                for definition in rebuilt:
                    conn.execute(definition)  # pg_indexes' own text
                progress(
                    f"load[{stage}]: {len(rebuilt)} GIN indexes built in "
                    f"{time.perf_counter() - build_started:.1f} s"
                )
    finally:
        conn.close()
    return superuser


def _drop_gin_indexes_for(conn: psycopg.Connection[tuple[object, ...]], messages: int) -> list[str]:
    """Drop the search's GIN indexes (conversations' migration 0012) when the load brings at
    least as many messages as the table holds: building them once after the COPY is far
    cheaper than maintaining them row by row. Returns their definitions, to build them again
    in the same transaction (the load's time counts the build)."""
    message_table, _ = _table(conn, "Message")
    row = conn.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass", (message_table,)
    ).fetchone()
    if row is None or int(row[0]) > messages:  # type: ignore[call-overload]
        return []
    conversation_table, _ = _table(conn, "Conversation")
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN (%s, %s) AND indexdef LIKE %s",
        (message_table, conversation_table, "% USING gin %"),
    ).fetchall()
    for name, _definition in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(str(name))))
    return [str(definition) for _name, definition in indexes]


def _copy_conversations(
    conn: psycopg.Connection[tuple[object, ...]],
    rows: list[tuple[int, str, str, int, int, int]],
    rng: random.Random,
) -> None:
    table, col = _table(conn, "Conversation")
    fields = ("id", "user", "title", "created_at", "updated_at", "message_count", "version")
    columns = [col[f] for f in fields]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor().copy(statement) as copy:
        buffer: list[str] = []
        for created, conv_id, user, n, updated, _ in rows:
            title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))).capitalize()
            buffer.append(
                f"{conv_id}\t{user}\t{title}\t{timestamp_text(created)}\t{timestamp_text(updated)}\t{n}\t{n}\n"
            )
        copy.write("".join(buffer))


def _copy_messages(
    conn: psycopg.Connection[tuple[object, ...]],
    keys: list[tuple[int, int, int]],
    conv_rows: list[tuple[int, str, str, int, int, int]],
    rng: random.Random,
    stage: str,
    started: float,
) -> None:
    table, col = _table(conn, "Message")
    fields = ("id", "conversation", "user", "seq", "role", "content", "tool_calls", "tool_results")
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(col[f]) for f in (*fields, "token_count", "created_at")),
    )
    by_index = {index: (conv_id, user) for _, conv_id, user, _, _, index in conv_rows}
    pool = ContentPool(rng)
    total = len(keys)
    report_every = max(1, total // 10)
    with conn.cursor().copy(statement) as copy:
        for start in range(0, total, TOKEN_BATCH):
            batch = keys[start : start + TOKEN_BATCH]
            lines: list[str] = []  # each row up to its token_count
            texts: list[list[str]] = []
            for created, index, seq in batch:
                conv_id, user = by_index[index]
                line, counted = _message_line(rng, pool, seq)
                lines.append(f"{uuid7_text(created // 1000, rng)}\t{conv_id}\t{user}\t{seq}\t{line}")
                texts.append(counted)
            counts = token_counts(texts)
            copy.write(
                "".join(
                    f"{line}\t{tokens}\t{timestamp_text(created)}\n"
                    for line, tokens, (created, _, _) in zip(lines, counts, batch, strict=True)
                )
            )
            done = start + len(batch)
            if done // report_every > start // report_every or done == total:
                elapsed = time.perf_counter() - started
                percent = 100 * done // total
                progress(f"load[{stage}]: {done:>10,}/{total:,} messages ({percent:3d}%) {elapsed:6.1f} s")


def _fill_previews(conn: psycopg.Connection[tuple[object, ...]], conversation_ids: list[str]) -> None:
    """Each loaded conversation's preview (its newest message's role, first 200 code points
    and time), as the service's appends leave it: one UPDATE, a probe of
    ``(conversation_id, seq)`` per conversation."""
    conv_table, cc = _table(conn, "Conversation")
    msg_table, mc = _table(conn, "Message")
    conn.execute(
        sql.SQL(
            "UPDATE {conv} c SET ({p_role}, {p_content}, {p_created}) = "
            "(SELECT m.{role}, substr(m.{content}, 1, 200), m.{created} FROM {msg} m "
            "WHERE m.{m_conv} = c.{c_id} AND m.{seq} = c.{count}) WHERE c.{c_id} = ANY(%s::uuid[])"
        ).format(
            conv=sql.Identifier(conv_table),
            msg=sql.Identifier(msg_table),
            p_role=sql.Identifier(cc.get("preview_role", "preview_role")),
            p_content=sql.Identifier(cc.get("preview_content", "preview_content")),
            p_created=sql.Identifier(cc.get("preview_created_at", "preview_created_at")),
            role=sql.Identifier(mc["role"]),
            content=sql.Identifier(mc["content"]),
            created=sql.Identifier(mc["created_at"]),
            m_conv=sql.Identifier(mc["conversation"]),
            seq=sql.Identifier(mc["seq"]),
            c_id=sql.Identifier(cc["id"]),
            count=sql.Identifier(cc["message_count"]),
        ),
        [conversation_ids],
    )


def _message_line(rng: random.Random, pool: ContentPool, seq: int) -> tuple[str, list[str]]:
    """role, content, tool_calls and tool_results of message ``seq`` as COPY text, and the
    texts its ``token_count`` counts."""
    if seq % 2:
        content = pool.take(60, 1.0)
        return f"user\t{copy_escape(content)}\t\\N\t\\N", [content]
    content = pool.take(300, 0.9)
    if rng.random() >= TOOL_CALL_SHARE:
        return f"assistant\t{copy_escape(content)}\t\\N\t\\N", [content]
    call = tool_call(rng)
    results = copy_escape(call.results) if call.results else "\\N"
    if rng.random() < 0.5:  # a call without text
        return f"assistant\t\\N\t{copy_escape(call.calls)}\t{results}", list(call.texts)
    return f"assistant\t{copy_escape(content)}\t{copy_escape(call.calls)}\t{results}", [content, *call.texts]


def load_conversation(
    database_url: str, *, user_id: str, length: int, seed: int, stage: str
) -> ConversationInfo:
    """One conversation of ``length`` messages for ``user_id``, ending two hours ago."""
    return _load_long(database_url, user_id, length, seed, stage).conversations[0]


def _load_long(database_url: str, user_id: str, length: int, seed: int, stage: str) -> StageResult:
    """A conversation of any length, one message every half second (the delete and depth
    targets are longer than the generator's 1,000 cap)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    end = time.time_ns() // 1000 - 7_200 * 1_000_000
    step = 500_000  # one message every half second
    first = end - length * step
    created = first - 10 * 1_000_000
    conv_id = uuid7_text(created // 1000, rng)
    conv_rows = [(created, conv_id, user_id, length, first + (length - 1) * step, 0)]
    keys = [(first + (seq - 1) * step, 0, seq) for seq in range(1, length + 1)]
    superuser = _copy_in_one_transaction(database_url, conv_rows, keys, rng, stage, started)
    info = ConversationInfo(id=conv_id, user_id=user_id, length=length, stage=stage)
    return StageResult([info], length, time.perf_counter() - started, superuser)


def verify(database_url: str) -> dict[str, int]:
    """Count the rows that break an invariant (all zero when the data is sound)."""
    conn, _ = connect_for_load(database_url)
    conv_table, cc = _table(conn, "Conversation")
    msg_table, mc = _table(conn, "Message")
    user_table, user_pk = _user_table()
    query = sql.SQL(
        """
        WITH m AS (
            SELECT {m_conv} AS conversation_id, count(*) AS n, min({m_seq}) AS lo, max({m_seq}) AS hi,
                   max({m_created}) AS last_at,
                   count(*) FILTER (WHERE NOT decreasing_ok) AS out_of_order
            FROM (
                SELECT {m_conv}, {m_seq}, {m_created},
                       {m_created} >= coalesce(lag({m_created}) OVER w, {m_created}) AS decreasing_ok
                FROM {msg} WINDOW w AS (PARTITION BY {m_conv} ORDER BY {m_seq})
            ) ordered
            GROUP BY {m_conv}
        )
        SELECT
            (SELECT count(*) FROM {conv} c LEFT JOIN m ON m.conversation_id = c.{c_id}
              WHERE coalesce(m.n, 0) <> c.{c_count}
                 OR (m.n IS NOT NULL AND (m.lo <> 1 OR m.hi <> m.n OR m.last_at <> c.{c_updated}))),
            (SELECT coalesce(sum(out_of_order), 0) FROM m),
            (SELECT count(*) FROM m WHERE NOT EXISTS
                (SELECT 1 FROM {conv} c WHERE c.{c_id} = m.conversation_id)),
            (SELECT count(*) FROM {msg} x JOIN {conv} c ON c.{c_id} = x.{m_conv}
              WHERE x.{m_user} <> c.{c_user}),
            (SELECT count(*) FROM {conv} c WHERE NOT EXISTS
                (SELECT 1 FROM {users} u WHERE u.{u_id} = c.{c_user})),
            (SELECT count(*) FROM {conv} c LEFT JOIN {msg} x
                ON x.{m_conv} = c.{c_id} AND x.{m_seq} = c.{c_count}
              WHERE c.preview_role IS DISTINCT FROM x.role
                 OR c.preview_created_at IS DISTINCT FROM x.{m_created}
                 OR c.preview_content IS DISTINCT FROM substr(x.content, 1, 200))
        """
    ).format(
        msg=sql.Identifier(msg_table),
        users=sql.Identifier(user_table),
        u_id=sql.Identifier(user_pk),
        conv=sql.Identifier(conv_table),
        m_conv=sql.Identifier(mc["conversation"]),
        m_seq=sql.Identifier(mc["seq"]),
        m_created=sql.Identifier(mc["created_at"]),
        m_user=sql.Identifier(mc["user"]),
        c_id=sql.Identifier(cc["id"]),
        c_count=sql.Identifier(cc["message_count"]),
        c_updated=sql.Identifier(cc["updated_at"]),
        c_user=sql.Identifier(cc["user"]),
    )
    try:
        row = conn.execute(query).fetchone()
    finally:
        conn.close()
    assert row is not None
    names = (
        "conversation_counters_wrong",
        "created_at_decreasing",
        "orphan_messages",
        "message_user_mismatch",
        "orphan_conversations",
        "previews_wrong",
    )
    return {name: int(str(value)) for name, value in zip(names, row, strict=True)}


def vacuum_analyze(database_url: str) -> float:
    """VACUUM ANALYZE the two tables, as autovacuum would have by now in production."""
    started = time.perf_counter()
    conn, _ = connect_for_load(database_url)
    try:
        for model in ("Conversation", "Message"):
            table, _ = _table(conn, model)
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
    finally:
        conn.close()
    return time.perf_counter() - started


def new_user_ids(count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield str(uuid.UUID(int=rng.getrandbits(128), version=4))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=0, help="default: messages / 50")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from bench.users import ensure_users

    users = ensure_users(args.users)
    conversations = args.conversations or max(1, args.messages // 50)
    load_stage(
        os.environ["DATABASE_URL"],
        user_ids=[str(u.pk) for u in users],
        messages=args.messages,
        conversations=conversations,
        seed=args.seed,
        stage="cli",
    )
    progress(f"verify: {verify(os.environ['DATABASE_URL'])}")


if __name__ == "__main__":
    main()
