"""Full-text search over a user's messages and conversation titles: one query builder for
``GET /api/v1/search/`` (ranked hits with snippets) and the conversation list's ``search=``.

Web-search syntax on both databases: words (all must match, stemmed), ``"quoted phrases"``,
``-excluded`` terms and ``OR`` between alternatives (``a b OR c`` is ``(a AND b) OR c``, as
PostgreSQL's ``websearch_to_tsquery`` reads it).

- PostgreSQL: stored ``tsvector`` columns generated from ``content`` and ``title``, each in a
  GIN index led by ``user_id`` (btree_gin), so that one index scan finds the user's matches
  only (migration 0012); ``websearch_to_tsquery``, ``ts_rank`` and ``ts_headline`` on the text
  search configuration ``settings.SEARCH_CONFIG``.
- SQLite: an FTS5 table (porter stemming) kept in step with messages and titles by triggers,
  each row carrying its owner as a token, so the match itself is narrowed to the user. The
  query is parsed here and rebuilt from quoted terms: no user text reaches FTS5's syntax.

Ranks are functions of one row and the query alone, never of other rows: ``ts_rank`` on
PostgreSQL, the number of matched terms on SQLite (FTS5's ``bm25`` weighs every user's rows,
so another user's writes would reorder a walk through the pages, and shape the order of
mine). Pages are a keyset on (rank, hit id), so a walk returns every hit once.

Snippets: the match markers are control characters stripped from the text first, so no
content can forge them; the pieces are then HTML-escaped and the matches wrapped in <mark>.
"""

import html
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.expressions import RawSQL

from accounts.models import User
from core import audit, replicas, sql
from core.rls import user_scope

from .models import Conversation, Message

QUERY_MAX_LENGTH = 200
SNIPPET_MAX_LENGTH = 300
# The match markers handed to ts_headline and FTS5's snippet(): removed from the text first.
START, STOP = "\x02", "\x03"
MARKERS = START + STOP
ELLIPSIS = "…"
# PostgreSQL: what stands for "<" and "&" in the text given to ts_headline (private-use
# characters, removed from the text first), put back before escaping.
STAND_INS = "\ue000\ue001"

# PostgreSQL: the generated columns and their indexes (migration 0012).
CONTENT_VECTOR = "content_search"
TITLE_VECTOR = "title_search"
# SQLite: the FTS5 table and the plain table it indexes (its external content).
FTS_TABLE = "conversations_search"
FTS_CONTENT = "conversations_searchtext"
# ts_headline's fragment: about 35 words around the best cover.
HEADLINE_OPTIONS = f"StartSel={START}, StopSel={STOP}, MaxWords=35, MinWords=15, ShortWord=3"
# The characters of a text that ts_headline looks at first (see _headline).
HEADLINE_WINDOW = 600
SNIPPET_TOKENS = 40

_WORD = re.compile(r"[^\W_]+")
# One term: an optional "-", then a quoted phrase (its closing quote optional) or a bare word.
_TERM = re.compile(r'(-?)(?:"([^"]*)"?|([^\s"]+))')


class InvalidSearch(ValueError):
    """The search text breaks a rule; the message says which, for the 400."""


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]
    negated: bool


@dataclass(frozen=True)
class SearchQuery:
    """The text as sent (what PostgreSQL parses) and its terms: alternatives, each a
    conjunction of terms (what SQLite's FTS5 expression is built from)."""

    text: str
    alternatives: tuple[tuple[Term, ...], ...]


def parse(text: str) -> SearchQuery:
    """``text`` as a search, or ``InvalidSearch``: 1 to 200 characters, not blank, and each
    alternative with at least one word to find (a query of only excluded words would match
    nearly everything, and no index serves it)."""
    if not text or not text.strip():
        raise InvalidSearch("Enter something to search for.")
    if len(text) > QUERY_MAX_LENGTH:
        raise InvalidSearch(f"At most {QUERY_MAX_LENGTH} characters.")
    if "\x00" in text:
        raise InvalidSearch("Null characters are not allowed.")
    alternatives: list[tuple[Term, ...]] = []
    current: list[Term] = []
    negate_next = False
    for match in _TERM.finditer(text):
        sign, phrase, word = match.groups()
        if phrase is None and sign == "" and word.lower() == "or":
            alternatives.append(tuple(current))
            current = []
            continue
        if phrase is None and word == "-":  # a lone "-" excludes what follows, as in PostgreSQL
            negate_next = True
            continue
        words = tuple(_WORD.findall(phrase if phrase is not None else word))
        if words:
            current.append(Term(words=words, negated=bool(sign) or negate_next))
        negate_next = False
    alternatives.append(tuple(current))
    kept = tuple(alternative for alternative in alternatives if alternative)
    if not kept:
        raise InvalidSearch("Enter at least one word to search for.")
    if any(all(term.negated for term in alternative) for alternative in kept):
        raise InvalidSearch("Each alternative needs a word to find, not only words to exclude.")
    return SearchQuery(text=text, alternatives=kept)


def fts5_expression(query: SearchQuery) -> str:
    """The FTS5 query of ``query``: every word quoted, every operator ours."""

    def phrase(term: Term) -> str:
        return '"' + " ".join(word.replace('"', '""') for word in term.words) + '"'

    alternatives = []
    for alternative in query.alternatives:
        found = " AND ".join(phrase(term) for term in alternative if not term.negated)
        excluded = "".join(f" NOT {phrase(term)}" for term in alternative if term.negated)
        alternatives.append(f"(({found}){excluded})")
    return f"body : ({' OR '.join(alternatives)})"


def owner_token(user_id: uuid.UUID) -> str:
    """The token that the FTS5 rows of ``user_id`` carry in their ``owner`` column: its hex
    digits and a final digit, which no porter rule changes (migration 0012's triggers)."""
    return f"{user_id.hex}0"


# -- the query builder ----------------------------------------------------------------------------


Fragment = tuple[str, list[Any]]


def _hits(
    query: SearchQuery, user_id: uuid.UUID, connection: BaseDatabaseWrapper, *, ranked: bool
) -> Fragment:
    """The user's matches, one row per matching message or title: (hit_id, doc, message_id,
    conversation_id, rank). ``ranked=False`` leaves the rank out (0) for a mere filter."""
    if connection.vendor == "postgresql":
        return _postgresql_hits(query, user_id, connection, ranked=ranked)
    if connection.vendor == "sqlite":
        return _sqlite_hits(query, user_id, connection, ranked=ranked)
    raise NotImplementedError(f"No full-text search for the {connection.vendor} backend.")


def _tsquery(query: SearchQuery) -> Fragment:
    return "websearch_to_tsquery(%s::regconfig, %s)", [settings.SEARCH_CONFIG, query.text]


def _postgresql_hits(
    query: SearchQuery, user_id: uuid.UUID, connection: BaseDatabaseWrapper, *, ranked: bool
) -> Fragment:
    tsquery, tsquery_params = _tsquery(query)
    branches: list[str] = []
    params: list[Any] = []
    for model, vector, message in ((Message, CONTENT_VECTOR, True), (Conversation, TITLE_VECTOR, False)):
        table, key, owner = sql.table(model, connection), sql.column(model, "id", connection), "user_id"
        conversation = sql.column(Message, "conversation", connection) if message else key
        # As float8: a real reaches Python rounded to its shortest decimal, and a cursor
        # holding that would no longer equal the row's rank.
        rank = f"ts_rank({vector}, {tsquery})::float8" if ranked else "0::float8"
        branches.append(
            f"SELECT {key} AS hit_id, NULL::bigint AS doc, "  # noqa: S608 (names from the models)
            f"{key if message else 'NULL::uuid'} AS message_id, "
            f"{conversation} AS conversation_id, {rank} AS rank "
            f"FROM {table} WHERE {owner} = %s AND {vector} @@ {tsquery}"
        )
        params += [*(tsquery_params if ranked else []), user_id, *tsquery_params]
    return " UNION ALL ".join(branches), params


def _sqlite_hits(
    query: SearchQuery, user_id: uuid.UUID, connection: BaseDatabaseWrapper, *, ranked: bool
) -> Fragment:
    # The number of matched terms: each adds one marker to the highlighted text.
    rank = f"length(highlight({FTS_TABLE}, 0, char(2), '')) - length({FTS_TABLE}.body)" if ranked else "0"
    match = f'owner : "{owner_token(user_id)}" AND ({fts5_expression(query)})'
    owner = sql.db_value(Message, "user", user_id, connection)
    return (
        f"SELECT coalesce(t.message_id, t.conversation_id) AS hit_id, t.id AS doc, "  # noqa: S608
        f"t.message_id AS message_id, "
        f"t.conversation_id AS conversation_id, f.rank AS rank "
        f"FROM (SELECT rowid AS doc, {rank} AS rank FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s) f "
        f"JOIN {FTS_CONTENT} t ON t.id = f.doc WHERE t.user_id = %s",
        [match, owner],
    )


def matching_conversations(*, user: User, query: SearchQuery, using: str = DEFAULT_DB_ALIAS) -> RawSQL:
    """The ids of the user's conversations whose title or any message matches, for
    ``pk__in`` on the conversation list (which keeps its own order and pages)."""
    hits, params = _hits(query, user.pk, connections[using], ranked=False)
    # Built here from the models' names; every value is a parameter.
    return RawSQL(f"SELECT conversation_id FROM ({hits}) hits", params)  # noqa: S608, S611


# -- the search page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    hit_id: uuid.UUID
    conversation_id: uuid.UUID
    conversation_title: str
    message_id: uuid.UUID | None
    role: str | None
    created_at: datetime
    snippet: str
    rank: float


@audit.audited("search")
def search_hits(
    *,
    user: User,
    query: SearchQuery,
    limit: int,
    after: tuple[float, uuid.UUID] | None = None,
    backwards: bool = False,
    using: str | None = None,
) -> list[Hit]:
    """The user's best ``limit`` hits after the keyset position ``after`` (rank, hit id),
    best first; with ``backwards``, the ones before it (still best first). One statement:
    the page is ranked and cut first, and only its rows are joined and given snippets.
    ``using``: by default the database the user's reads use now (core/replicas.py)."""
    connection = connections[using or replicas.reads_for(user.pk)]
    statement, params = search_statement(
        user_id=user.pk, query=query, limit=limit, after=after, backwards=backwards, connection=connection
    )
    with user_scope(user), connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    found = [_hit(row, connection) for row in rows]
    found.sort(key=lambda hit: (hit.rank, hit.hit_id), reverse=True)
    return found


def search_statement(
    *,
    user_id: uuid.UUID,
    query: SearchQuery,
    limit: int,
    after: tuple[float, uuid.UUID] | None,
    backwards: bool,
    connection: BaseDatabaseWrapper,
) -> Fragment:
    """``search_hits``' statement and its parameters."""
    hits, params = _hits(query, user_id, connection, ranked=True)
    before, order = ("<", "DESC") if not backwards else (">", "ASC")
    where = "TRUE"
    if after is not None:
        rank, hit_id = after
        where = f"(rank {before} %s OR (rank = %s AND hit_id {before} %s))"
        params += [rank, rank, sql.db_value(Message, "id", hit_id, connection)]
    page = f"SELECT * FROM ({hits}) hits WHERE {where} ORDER BY rank {order}, hit_id {order} LIMIT %s"  # noqa: S608
    params.append(limit)
    statement, more = _page_sql(page, query, user_id, connection)
    return statement, [*params, *more]


def _page_sql(page: str, query: SearchQuery, user_id: uuid.UUID, connection: BaseDatabaseWrapper) -> Fragment:
    """The page's rows joined to their conversation and message, with snippets; the
    parameters that follow the page's."""
    c_table, m_table = sql.table(Conversation, connection), sql.table(Message, connection)
    owner = sql.db_value(Message, "user", user_id, connection)
    text = "CASE WHEN p.message_id IS NULL THEN c.title ELSE coalesce(m.content, '') END"
    fields = (
        "p.hit_id, p.message_id, p.conversation_id, c.title, m.role, "
        "coalesce(m.created_at, c.created_at), p.rank"
    )
    joins = (
        f"JOIN {c_table} c ON c.id = p.conversation_id AND c.user_id = %s "
        f"LEFT JOIN {m_table} m ON m.id = p.message_id AND m.user_id = %s"
    )
    if connection.vendor == "postgresql":
        tsquery, tsquery_params = _tsquery(query)
        # The markers go, and so do the stand-ins for < and &, which take their place: the
        # parser would take <…> for a tag and &…; for an entity and leave them out.
        translated = ["<&" + STAND_INS + MARKERS, STAND_INS]
        statement = (
            f"WITH p AS ({page}) SELECT {fields}, s.headline FROM p {joins} "  # noqa: S608 (names from the models)
            f"CROSS JOIN LATERAL ({_headline(text)}) s"
        )
        return statement, [
            owner,
            owner,
            *translated,
            settings.SEARCH_CONFIG,
            *tsquery_params,
            HEADLINE_OPTIONS,
        ]
    # FTS5's snippet() works only in the statement that matches: the page's rows are
    # matched again, by rowid (the texts in the FTS5 table have no markers to strip).
    snippet = f"snippet({FTS_TABLE}, 0, char(2), char(3), '{ELLIPSIS}', {SNIPPET_TOKENS})"
    match = f"body : ({fts5_expression(query)})"
    statement = (
        f"SELECT {fields}, {snippet} FROM ({page}) p "  # noqa: S608 (names from the models)
        f"JOIN {FTS_TABLE} ON {FTS_TABLE}.rowid = p.doc AND {FTS_TABLE} MATCH %s {joins}"
    )
    return statement, [match, owner, owner]


def _headline(text: str) -> str:
    """ts_headline of ``text``, first of its first ``HEADLINE_WINDOW`` characters (cut at a
    space): it parses and stems every word it is given, and the best-ranked hits are the
    longest texts, so on the whole of each (up to 10,000 characters) it was most of a page's
    time. The whole text only when the window holds no match. ``OFFSET 0`` keeps the
    window's headline computed once."""
    window = (
        f"CASE WHEN length(t.text) <= {HEADLINE_WINDOW} THEN t.text "
        f"ELSE regexp_replace(left(t.text, {HEADLINE_WINDOW}), '\\S*$', '') END"
    )
    whole = "ts_headline(w.config, w.text, w.query, w.options)"
    return (
        f"SELECT CASE WHEN strpos(w.short, chr(2)) > 0 OR length(w.text) <= {HEADLINE_WINDOW} "  # noqa: S608
        f"THEN w.short ELSE {whole} END AS headline "
        f"FROM (SELECT t.*, ts_headline(t.config, {window}, t.query, t.options) AS short "
        f"FROM (SELECT translate({text}, %s, %s) AS text, %s::regconfig AS config, "
        "websearch_to_tsquery(%s::regconfig, %s) AS query, %s AS options) t OFFSET 0) w"
    )


def _hit(row: Sequence[Any], connection: BaseDatabaseWrapper) -> Hit:
    hit_id, message_id, conversation_id, title, role, created_at, rank, snippet = row
    return Hit(
        hit_id=sql.from_db(Message, "id", hit_id, connection),
        conversation_id=sql.from_db(Message, "id", conversation_id, connection),
        conversation_title=title,
        message_id=None if message_id is None else sql.from_db(Message, "id", message_id, connection),
        role=role,
        created_at=sql.from_db(Message, "created_at", created_at, connection),
        snippet=render_snippet(_restored(snippet or "", connection)),
        rank=float(rank),
    )


def _restored(headline: str, connection: BaseDatabaseWrapper) -> str:
    if connection.vendor != "postgresql":
        return headline
    return headline.replace(STAND_INS[0], "<").replace(STAND_INS[1], "&")


def render_snippet(marked: str, limit: int = SNIPPET_MAX_LENGTH) -> str:
    """A fragment with ``START``/``STOP`` around its matches as HTML: the text escaped, each
    match in <mark>…</mark>, at most ``limit`` characters in all (escapes and tags counted),
    cut only between characters, never inside an escape or a mark; the context before the
    first match is shortened so that the match is shown."""
    pieces = _pieces(marked)
    first = next((index for index, (_, match) in enumerate(pieces) if match), len(pieces))
    before = "".join(text for text, _ in pieces[:first])
    out: list[str] = []
    budget = limit
    lead_budget = limit // 3
    lead = _escaped_tail(before, lead_budget)
    if len(lead) < len(html.escape(before, quote=False)):
        lead = ELLIPSIS + _escaped_tail(before, lead_budget - 1)
    out.append(lead)
    budget -= len(lead)
    for text, match in pieces[first:]:
        escaped = html.escape(text, quote=False)
        piece = f"<mark>{escaped}</mark>" if match else escaped
        if len(piece) <= budget:
            out.append(piece)
            budget -= len(piece)
            continue
        if not match:
            out.append(_escaped_head(text, budget))
        break
    return "".join(out)


def _pieces(marked: str) -> list[tuple[str, bool]]:
    """``marked`` as (text, is a match) pieces."""
    pieces: list[tuple[str, bool]] = []
    for index, part in enumerate(re.split(f"[{MARKERS}]", marked)):
        if part:
            pieces.append((part, index % 2 == 1))
    return pieces


def _escaped_head(text: str, budget: int) -> str:
    out, used = [], 0
    for char in text:
        escaped = html.escape(char, quote=False)
        if used + len(escaped) > budget:
            break
        out.append(escaped)
        used += len(escaped)
    return "".join(out)


def _escaped_tail(text: str, budget: int) -> str:
    out, used = [], 0
    for char in reversed(text):
        escaped = html.escape(char, quote=False)
        if used + len(escaped) > budget:
            break
        out.append(escaped)
        used += len(escaped)
    return "".join(reversed(out))


def finite_rank(value: Any) -> float:
    """A rank from a cursor: a finite number, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a rank")
    return float(value)
