"""Reads from streaming replicas, with read-your-writes.

``DATABASE_REPLICA_URLS`` names hot standbys of the primary; the settings give them the
aliases ``replica1``, ``replica2``, … (``settings.DATABASE_REPLICAS``) and install
``ReplicaRouter``. Without it every function here leaves everything on the primary.

Which reads may go to a replica: those of a read-only block (``read_only``: a GET, HEAD or
OPTIONS API request, by core.middleware; a selector's call, by conversations.selectors), made
outside any transaction on the primary (a write's reads stay with it). The block picks its
database once, for the first user it reads for (``reads_for``, called by the token's user lookup
and by ``rls.user_scope``): a replica that has replayed that user's last write, else the primary.

Read-your-writes, after GitLab's database load balancer:
- When a transaction that wrote for a user commits (``written``, called by
  ``rls.user_scope(atomic=True)``), the primary's WAL insert position, which is at or past the
  commit record, is kept in the shared cache (Redis, which the settings require with
  replicas) under the user's id, only ever raised (a Lua max, so two servers finishing in either
  order keep the newer), for ``DATABASE_REPLICA_MAX_LAG`` + 60 seconds: by then every replica
  still in use has replayed it.
- Each replica's replay position is cached in this process. A reader whose last write is at or
  before it reads there at no extra cost; one whose write is newer asks the replica again, at
  most every ``POSITION_MAX_AGE`` seconds, and reads from the primary until the replica has it.
  So a read costs one GET in Redis, and a round trip to the replica only right after a write.
- A replica is checked (position, lag, still streaming) at least every ``CHECK_INTERVAL``
  seconds; one that cannot be reached, has stopped streaming, or lags more than
  ``DATABASE_REPLICA_MAX_LAG`` seconds is skipped until a later check finds it well. Lag is
  the replica's own (replay behind receipt) and its receive position against what the primary
  had flushed ``DATABASE_REPLICA_MAX_LAG`` seconds ago, which a thread of each process samples
  (``_PrimarySampler``): that also sees a replica that has stopped receiving.
- A read that fails on its replica (the replica died under it, its pooled connection is dead,
  no connection came in time, a recovery conflict cancelled it) is run again on the primary,
  once: a read-only request by core.middleware (its throttle counts it twice), a selector by
  ``reads`` (``replica_failed`` says whether the failure was the replica's). A statement
  timeout is not retried: it would only cost the primary as much. The replica is checked
  again at once, by the next read that picks it, over a fresh connection when its pool fails:
  a saturated pool does not retire a replica, a dead server does.
- A block reads for one user: a second, different user in the same block (agent code that
  wraps several users' reads in one ``read_only``) sends the rest of the block to the primary,
  since the replica was chosen for the first user's writes.

Row-level security is unchanged on a replica: the identity is a session setting, which a hot
standby allows, set by the same lookup as on the primary.
"""

import contextlib
import copy
import functools
import itertools
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# How old a replica's cached replay position may be before a reader whose write is newer asks
# again: a few milliseconds, so that the replicas answer at most a few hundred of these a second
# per process, however many reads there are.
POSITION_MAX_AGE = 0.005
# How often a replica in use is checked for lag and streaming, and how long one found failing
# is left alone before the next try.
CHECK_INTERVAL = 1.0
RETRY_INTERVAL = 5.0
# The failures of a read on a replica that the primary may not share: hot-standby recovery
# conflicts (40001; 40P01, a buffer-pin deadlock with replay) and the server shutting down or
# restarting (57P01-57P04). Connection failures carry no SQLSTATE. A statement timeout
# (57014) would only recur on the primary.
RETRIED_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "57P04"})

# The replica's position (on a promoted one, which is now a primary, its own), how many
# seconds its replay is behind (0 when it has replayed all it received), and whether it still
# receives WAL (or is no standby any more): a WAL receiver process exists only while it is
# connected to its primary or trying to. (Its status column is for pg_read_all_stats only.)
CHECK_SQL = """
SELECT
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END
        - '0/0'::pg_lsn,
    CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
        ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 'Infinity')
    END,
    NOT pg_is_in_recovery() OR EXISTS (SELECT FROM pg_stat_wal_receiver),
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_flush_lsn() END
        - '0/0'::pg_lsn
"""
WRITTEN_SQL = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"
# What the primary has flushed, which is what it sends: a replica's receive position reaches it.
PRIMARY_FLUSHED_SQL = "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn"
# Raise the stored position to ARGV[1], never lower it; either way it lives ARGV[2] more seconds.
RAISE_LUA = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > stored then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
    redis.call('EXPIRE', KEYS[1], ARGV[2])
end
"""


@dataclass
class _Replica:
    """What this process last learnt of one replica."""

    alias: str
    position: int = -1
    usable: bool = False
    checked_at: float = float("-inf")
    checking: threading.Lock = field(default_factory=threading.Lock)

    def check_due(self, now: float) -> bool:
        return now - self.checked_at >= (CHECK_INTERVAL if self.usable else RETRY_INTERVAL)


@dataclass
class _Block:
    """A read-only block: the database its reads use, once chosen, for which user, and the
    last database error an API answer was made of (``failed``)."""

    alias: str | None = None
    user: str | None = None
    error: BaseException | None = None


_block: ContextVar[_Block | None] = ContextVar("replica_reads", default=None)
_replicas: dict[str, _Replica] = {}
_turns = itertools.count()


def configured() -> bool:
    return bool(settings.DATABASE_REPLICAS)


@contextmanager
def read_only() -> Iterator[None]:
    """Mark the block as one that only reads: its reads may go to a replica that has the
    reader's writes. Nested blocks keep the outer block's choice."""
    if _block.get() is not None or not configured():
        yield
        return
    token = _block.set(_Block())
    try:
        yield
    finally:
        _block.reset(token)


def reads(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` as a read-only block (``read_only``); when a replica it read from fails
    under it, run once more on the primary."""

    @functools.wraps(function)
    def reading(*args: P.args, **kwargs: P.kwargs) -> R:
        with read_only():
            try:
                return function(*args, **kwargs)
            except DatabaseError as exc:
                if not replica_failed(exc):
                    raise
            return function(*args, **kwargs)

    return reading


def failed(error: BaseException) -> None:
    """Note the database error that an API answer (a 503) is being made of, for
    ``replica_failed`` to judge once the answer reaches core.middleware."""
    block = _block.get()
    if block is not None:
        block.error = error


def replica_failed(error: BaseException | None = None) -> bool:
    """After a database error in a read-only block (``error``, else the one ``failed`` noted):
    whether it was the replica's that the block reads from, and one that the primary may not
    share. If so the rest of the block reads from the primary, and the replica is checked
    again by the next read that picks it."""
    block = _block.get()
    if block is None or block.alias is None or block.alias == DEFAULT_DB_ALIAS:
        return False
    connection = connections[block.alias]
    if not connection.errors_occurred:  # Django's flag: an error that may break the connection
        return False
    sqlstate = getattr(getattr(error or block.error, "__cause__", None), "sqlstate", None)
    if sqlstate is not None and sqlstate not in RETRIED_SQLSTATES:
        return False
    connection.errors_occurred = False
    logger.warning("Replica %s failed under a read (%s): reading from the primary", block.alias, sqlstate)
    with contextlib.suppress(DatabaseError):
        connection.close()
    _replica(block.alias).checked_at = float("-inf")  # due: the next read that picks it checks it
    block.alias = DEFAULT_DB_ALIAS
    return True


def reads_for(user_id: uuid.UUID | str) -> str:
    """The database that reads of ``user_id``'s rows use now: the read-only block's choice
    (made now, for this user, if not made yet), the primary outside such a block or inside a
    transaction on the primary."""
    block = _block.get()
    if block is None or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    user = str(user_id)
    if block.alias is None:
        block.alias, block.user = _choose(user), user
    elif block.user != user:
        block.alias = DEFAULT_DB_ALIAS  # chosen for another user's writes
    return block.alias


def use_primary() -> None:
    """Send the rest of the read-only block to the primary (a row the replica does not
    have yet, such as a user created by this very request)."""
    block = _block.get()
    if block is not None:
        block.alias = DEFAULT_DB_ALIAS


def written(user_id: uuid.UUID | str) -> None:
    """Inside a transaction that writes for ``user_id``: once it commits, that user's reads
    go to replicas only when they have replayed it."""
    if configured():
        # Robust: the write has committed, and its answer must say so even when Redis or the
        # primary fails now (the failure is logged; that write's reads may then be stale on
        # a replica for up to DATABASE_REPLICA_MAX_LAG).
        transaction.on_commit(partial(_remember_write, str(user_id)), using=DEFAULT_DB_ALIAS, robust=True)


class ReplicaRouter:
    """Reads of a read-only block to the database it chose; everything else, and migrations,
    on the primary (a replica is read-only and follows the primary's schema)."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        block = _block.get()
        if block is None or block.alias is None or connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return None
        return block.alias

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS


def _written_key(user_id: str) -> str:
    return f"replicas:written:{user_id}"


def _remember_write(user_id: str) -> None:
    from django.core.cache import cache

    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(WRITTEN_SQL)
        (position,) = cursor.fetchone()
    key = cache.make_and_validate_key(_written_key(user_id))
    client = cache._cache.get_client(key, write=True)  # type: ignore[attr-defined]
    client.eval(RAISE_LUA, 1, key, int(position), int(settings.DATABASE_REPLICA_MAX_LAG) + 60)


def _last_write(user_id: str) -> int | None:
    from django.core.cache import cache

    position = cache.get(_written_key(user_id))
    return int(position) if position is not None else None


def _choose(user_id: str) -> str:
    needed = _last_write(user_id)
    aliases = settings.DATABASE_REPLICAS
    start = next(_turns) % len(aliases)
    for alias in aliases[start:] + aliases[:start]:
        if _serves(_replica(alias), needed):
            return alias
    return DEFAULT_DB_ALIAS


def _replica(alias: str) -> _Replica:
    replica = _replicas.get(alias)
    if replica is None:
        replica = _replicas.setdefault(alias, _Replica(alias))
    return replica


def _serves(replica: _Replica, needed: int | None) -> bool:
    """Whether ``replica`` may serve a reader whose last write is at ``needed``."""
    now = time.monotonic()
    if replica.check_due(now):
        _check(replica)
    if not replica.usable:
        return False
    if needed is None or replica.position >= needed:
        return True
    if now - replica.checked_at >= POSITION_MAX_AGE:
        _check(replica)
    return replica.usable and replica.position >= needed


def _check(replica: _Replica) -> None:
    """Ask the replica where it is, on this thread's connection to it (which the read then
    uses). One thread at a time; the others go on with what was last learnt."""
    if not replica.checking.acquire(blocking=False):
        return
    try:
        try:
            position, lag, streaming, received = _ask(replica.alias)
        except DatabaseError as exc:
            _set_usable(replica, False, f"cannot be read ({exc.__class__.__name__}: {exc})")
            return
        replica.position = int(position) if position is not None else -1
        behind = _primary.behind(int(received) if received is not None else -1)
        if not streaming:
            _set_usable(replica, False, "has stopped streaming from the primary")
        elif lag > settings.DATABASE_REPLICA_MAX_LAG:
            _set_usable(replica, False, f"lags {float(lag):.1f} s")
        elif behind > settings.DATABASE_REPLICA_MAX_LAG:
            _set_usable(replica, False, f"has not got what the primary wrote {behind:.1f} s ago")
        else:
            _set_usable(replica, True, "serves reads")
    finally:
        replica.checked_at = time.monotonic()
        replica.checking.release()


class _PrimarySampler:
    """The primary's flushed WAL position, sampled every CHECK_INTERVAL by a thread of this
    process over a connection of its own: never in a request, so that a primary that is down
    or slow holds no replica read.

    A replica's own lag figure (replay behind its last replayed commit's time) is 0 when it
    has replayed all it received, however little that is: one that has stopped receiving (a
    stalled or slow link, a cascading standby whose upstream lags) looks current. Its receive
    position against what the primary had flushed (and so sent) DATABASE_REPLICA_MAX_LAG
    ago does not."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()
        self.lock = threading.Lock()
        self.pid: int | None = None  # the process whose thread samples (none survives a fork)

    def behind(self, received: int) -> float:
        """Seconds since the primary had flushed past ``received`` (a replica's receive
        position), as far as the samples tell; 0 when they do not."""
        self._ensure_sampling()
        now = time.monotonic()
        with self.lock:
            self._forget(now)
            for sampled_at, flushed in self.samples:
                if flushed > received:
                    return now - sampled_at
        return 0.0

    def _ensure_sampling(self) -> None:
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
            self.samples.clear()
        threading.Thread(target=self._sample_forever, name="replicas-primary", daemon=True).start()

    def _forget(self, now: float) -> None:
        # Samples older than the bound and a check's interval tell no more than the oldest kept.
        horizon = now - settings.DATABASE_REPLICA_MAX_LAG - 2 * CHECK_INTERVAL
        while self.samples and self.samples[0][0] < horizon:
            self.samples.popleft()

    def _sample_forever(self) -> None:
        connection = None
        while True:
            try:
                if connection is None:
                    connection = _unpooled(DEFAULT_DB_ALIAS)
                    with self.lock:  # a new primary (a failover) numbers its WAL afresh
                        self.samples.clear()
                row = _fetch_row(connection, PRIMARY_FLUSHED_SQL)
                with self.lock:
                    now = time.monotonic()
                    self.samples.append((now, int(row[0])))
                    self._forget(now)
            except DatabaseError as exc:
                logger.warning("Replica checks: the primary's position cannot be read (%s)", exc)
                if connection is not None:
                    with contextlib.suppress(DatabaseError):
                        connection.close()
                connection = None
            time.sleep(CHECK_INTERVAL)


_primary = _PrimarySampler()


def _ask(alias: str) -> tuple[Any, ...]:
    """CHECK_SQL's answer: over this thread's pooled connection, else (a dead pooled connection,
    or none free in time: a busy replica is not a dead one) over a fresh connection."""
    connection = connections[alias]
    try:
        return _fetch_row(connection, CHECK_SQL)
    except DatabaseError:
        with contextlib.suppress(DatabaseError):
            connection.close()
    fresh = _unpooled(alias)
    try:
        return _fetch_row(fresh, CHECK_SQL)
    finally:
        with contextlib.suppress(DatabaseError):
            fresh.close()


def _unpooled(alias: str) -> Any:
    """A connection to ``alias`` of its own, outside its pool, for the calling thread."""
    connection = connections.create_connection(alias)
    connection.settings_dict = copy.deepcopy(connection.settings_dict)
    connection.settings_dict["OPTIONS"].pop("pool", None)
    connection.settings_dict["OPTIONS"].setdefault("connect_timeout", 2)
    return connection


def _fetch_row(connection: Any, sql: str) -> tuple[Any, ...]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row: tuple[Any, ...] = cursor.fetchone()
        return row


def _set_usable(replica: _Replica, usable: bool, why: str) -> None:
    if usable != replica.usable:
        log = logger.info if usable else logger.warning
        log("Replica %s %s", replica.alias, why)
    replica.usable = usable
