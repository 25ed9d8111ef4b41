"""Channel `jdbc` (Flume's org.apache.flume.channel.jdbc.JdbcChannel) on a database server
that several agents may share: PostgreSQL (asyncpg) or MySQL/MariaDB (asyncmy).

Keys as Flume's: `db.type` (POSTGRESQL / PGSQL, MYSQL / MARIADB; Flume's embedded DERBY is
refused with a pointer to the `file` channel), `driver.url` (a JDBC URL such as
`jdbc:postgresql://db:5432/flume` or `jdbc:mysql://db:3306/flume`, read as such),
`db.username`, `db.password`, `connection.properties.file` (Java properties: `user`,
`password`), `create.schema`, `create.index`, `transaction.isolation`,
`maximum.connections`, `maximum.capacity` (0: no limit). flumed's own: `table`,
`queue` (rows of one channel; agents sharing a channel use the same queue, default the
channel's name), `transactionCapacity`, `keep-alive`, `pollInterval`.

How a transaction maps onto the database:
- a put is one INSERT of the whole batch in one database transaction (one round trip);
- a take opens a database transaction, claims up to N rows with `SELECT ... ORDER BY id
  FOR UPDATE SKIP LOCKED` (rows another agent claimed are skipped, not waited for), and
  DELETEs them on commit; a rollback, or a crash that drops the connection, releases the
  claim and the rows are the first ones taken next, in their order;
- order is kept per producer (ids grow within a batch and from batch to batch).
Waiting for a first event: PostgreSQL wakes takers with LISTEN/NOTIFY (the insert
notifies at commit); MySQL has no notification, so a taker re-checks every
`pollInterval` ms (a put in the same agent wakes it at once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from flumed.channels.base import Channel, Transaction
from flumed.config.keys import ignored, key, prefix
from flumed.errors import ChannelError, ChannelFullError, ComponentStartError
from flumed.event import Event
from flumed.lifecycle import stop_task
from flumed.logs import RateLimitedLog

log = logging.getLogger("flumed.channels.jdbc")

_DB_TYPES = {
    "postgresql": "postgresql",
    "pgsql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}
_ISOLATION = {
    "READ_UNCOMMITTED": "READ UNCOMMITTED",
    "READ_COMMITTED": "READ COMMITTED",
    "REPEATABLE_READ": "REPEATABLE READ",
    "SERIALIZABLE": "SERIALIZABLE",
}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class JdbcChannelConfig:
    db_type: str = key("DERBY", name="db.type", doc="POSTGRESQL (PGSQL) or MYSQL (MARIADB).")
    driver_url: str = key("", name="driver.url", doc="JDBC URL of the database.")
    db_username: str = key("", name="db.username")
    db_password: str = key("", name="db.password")
    connection_properties_file: str = key(
        "", name="connection.properties.file", doc="Java properties file (user, password)."
    )
    create_schema: bool = key(True, name="create.schema", doc="Create the table at start.")
    create_index: bool = key(True, name="create.index", doc="Create the (queue, id) index.")
    create_foreignkey: bool = key(True, name="create.foreignkey", doc="Accepted; no effect.")
    transaction_isolation: str = key("READ_COMMITTED", name="transaction.isolation")
    maximum_connections: int = key(10, name="maximum.connections", ge=2)
    maximum_capacity: int = key(0, name="maximum.capacity", ge=0, doc="0: no limit.")
    table: str = key("flumed_channel_events", doc="flumed: the table that holds the events.")
    queue: str = key("", doc="flumed: rows of this channel (default: the channel's name).")
    transactionCapacity: int = key(10_000, ge=1, doc="flumed: most events in a transaction.")
    keep_alive: float = key(3.0, name="keep-alive", ge=0, doc="Seconds a put waits for room.")
    pollInterval: int = key(200, ge=10, doc="flumed: ms between checks for MySQL takers.")
    sysprop: dict[str, Any] = prefix("sysprop", doc="Java system properties: ignored.")

    IGNORED = ignored("driver.class")

    @property
    def kind(self) -> str:
        return _DB_TYPES.get(self.db_type.strip().lower(), "")

    def check(self) -> list[str]:
        problems = []
        t = self.db_type.strip().upper()
        if t == "DERBY":
            problems.append(
                "key 'db.type': Flume's embedded DERBY database does not exist in flumed; "
                "for a durable channel on this host use `type = file`, for a shared one set "
                "db.type = POSTGRESQL or MYSQL and driver.url"
            )
        elif not self.kind:
            problems.append(
                f"key 'db.type': {self.db_type!r} is not supported; use POSTGRESQL or MYSQL"
            )
        elif not self.driver_url:
            problems.append("missing required key 'driver.url' (e.g. jdbc:postgresql://h/db)")
        else:
            try:
                scheme = parse_url(self.driver_url)["scheme"]
            except ValueError as e:
                problems.append(f"key 'driver.url': {e}")
            else:
                if scheme != self.kind:
                    problems.append(f"key 'driver.url': a {scheme} URL with db.type {self.db_type}")
        if self.transaction_isolation.upper() not in _ISOLATION:
            problems.append(
                f"key 'transaction.isolation': expected one of {', '.join(_ISOLATION)}, "
                f"got {self.transaction_isolation!r}"
            )
        if not _IDENT.match(self.table):
            problems.append(f"key 'table': {self.table!r} is not a plain SQL identifier")
        if self.maximum_capacity and self.transactionCapacity > self.maximum_capacity:
            problems.append("transactionCapacity must not exceed maximum.capacity")
        if self.sysprop:
            log.warning("Keys sysprop.* (Java system properties) have no meaning in flumed.")
        return problems


def parse_url(url: str) -> dict[str, Any]:
    """`jdbc:postgresql://host:port/db?user=u&password=p` → its parts.

    Raises:
        ValueError: not a jdbc:postgresql / jdbc:mysql / jdbc:mariadb URL.
    """
    if not url.startswith("jdbc:"):
        raise ValueError(f"{url!r} is not a JDBC URL (jdbc:postgresql://... or jdbc:mysql://...)")
    parts = urlsplit(url[5:])
    scheme = _DB_TYPES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"{url!r}: expected jdbc:postgresql://HOST[:PORT]/DB or jdbc:mysql://...")
    query = dict(parse_qsl(parts.query))
    return {
        "scheme": scheme,
        "host": parts.hostname,
        "port": parts.port or (5432 if scheme == "postgresql" else 3306),
        "database": unquote(parts.path.lstrip("/")) or None,
        "user": query.get("user") or (unquote(parts.username) if parts.username else None),
        "password": query.get("password") or (unquote(parts.password) if parts.password else None),
    }


def _read_properties(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s or s[0] in "#!":
            continue
        k, _, v = s.partition("=") if "=" in s else s.partition(":")
        out[k.strip()] = v.strip()
    return out


def _encode_headers(headers: dict[str, str]) -> bytes:
    return (
        json.dumps(headers, ensure_ascii=False, separators=(",", ":")).encode() if headers else b""
    )


def _decode(body: bytes, headers: bytes) -> Event:
    return Event(bytes(body), json.loads(headers) if headers else {})


class _Backend:
    """The SQL of one database kind. A claim is (connection, ids) held by a take."""

    def __init__(self, cfg: JdbcChannelConfig, conn: dict[str, Any], queue: str) -> None:
        self.cfg = cfg
        self.conn = conn
        self.queue = queue
        self.table = cfg.table
        self.isolation = _ISOLATION[cfg.transaction_isolation.upper()]

    async def open(self, wake: Any) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def insert(self, events: Sequence[Event], capacity: int) -> bool:
        """Insert in one transaction; False (nothing inserted) when it would pass capacity."""
        raise NotImplementedError

    async def claim(self, n: int) -> tuple[Any, list[tuple[int, Event]]]:
        raise NotImplementedError

    async def finish(self, claim: Any, ids: list[int]) -> None:
        raise NotImplementedError

    async def release(self, claim: Any) -> None:
        raise NotImplementedError

    async def count(self) -> int:
        raise NotImplementedError

    notifies = False


class _Postgres(_Backend):
    notifies = True

    async def open(self, wake: Any) -> None:
        import asyncpg

        c = self.conn
        kw = dict(host=c["host"], port=c["port"], user=c["user"], password=c["password"],
                  database=c["database"],
                  server_settings={"application_name": f"flumed {self.queue}"[:63]})  # fmt: skip
        self.pool = await asyncpg.create_pool(
            min_size=1, max_size=self.cfg.maximum_connections - 1, **kw
        )
        t = self.table
        async with self.pool.acquire() as con:
            if self.cfg.create_schema:
                await con.execute(
                    f"CREATE TABLE IF NOT EXISTS {t} (id BIGSERIAL PRIMARY KEY, "
                    "queue TEXT NOT NULL, body BYTEA NOT NULL, headers BYTEA NOT NULL)"
                )
            if self.cfg.create_index:
                await con.execute(f"CREATE INDEX IF NOT EXISTS {t}_queue_id ON {t} (queue, id)")
        # A connection of its own for LISTEN: puts by any agent wake this agent's takers.
        self.channel_name = f"flumed_{t}_{self.queue}"[:63]
        self.listener = await asyncpg.connect(**kw)
        await self.listener.add_listener(self.channel_name, lambda *a: wake())
        self._insert = (
            f"WITH ins AS (INSERT INTO {t} (queue, body, headers) SELECT $1, b, h FROM "
            "unnest($2::bytea[], $3::bytea[]) WITH ORDINALITY AS u(b, h, i) ORDER BY i "
            "RETURNING 1) SELECT pg_notify($4, '')"
        )
        # One round trip claims and deletes; the open transaction keeps the rows (a
        # rollback or a dropped connection brings them back), and SKIP LOCKED lets other
        # agents take the rows after them meanwhile.
        self._claim = (
            f"DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE queue = $1 ORDER BY id "
            "LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, body, headers"
        )

    async def close(self) -> None:
        listener = getattr(self, "listener", None)
        if listener is not None:
            listener.terminate()
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.terminate()

    async def insert(self, events: Sequence[Event], capacity: int) -> bool:
        async with self.pool.acquire() as con, con.transaction(isolation=_pg_iso(self.isolation)):
            if capacity:
                n = await con.fetchval(f"SELECT count(*) FROM {self.table} WHERE queue = $1",
                                       self.queue)  # fmt: skip
                if n + len(events) > capacity:
                    return False
            await con.execute(
                self._insert,
                self.queue,
                [e.body for e in events],
                [_encode_headers(e.headers) for e in events],
                self.channel_name,
            )
        return True

    async def claim(self, n: int) -> tuple[Any, list[tuple[int, Event]]]:
        con = await self.pool.acquire()
        try:
            tr = con.transaction(isolation=_pg_iso(self.isolation))
            await tr.start()
            rows = await con.fetch(self._claim, self.queue, n)
        except BaseException:
            await self.pool.release(con)
            raise
        if not rows:
            await tr.rollback()
            await self.pool.release(con)
            return None, []
        rows = sorted(rows, key=lambda r: r[0])  # RETURNING has no order of its own
        return (con, tr), [(r[0], _decode(r[1], r[2])) for r in rows]

    async def finish(self, claim: Any, ids: list[int]) -> None:
        con, tr = claim
        try:
            await tr.commit()
        finally:
            await self.pool.release(con)

    async def release(self, claim: Any) -> None:
        con, tr = claim
        try:
            if not con.is_closed():
                await tr.rollback()
        finally:
            await self.pool.release(con)

    async def count(self) -> int:
        async with self.pool.acquire() as con:
            n: int = await con.fetchval(
                f"SELECT count(*) FROM {self.table} WHERE queue = $1", self.queue
            )
            return n


def _pg_iso(level: str) -> str:
    return level.lower().replace(" ", "_")


class _MySql(_Backend):
    async def open(self, wake: Any) -> None:
        import asyncmy

        c = self.conn
        self.pool = await asyncmy.create_pool(
            host=c["host"],
            port=c["port"],
            user=c["user"] or "root",
            password=c["password"] or "",
            database=c["database"],
            minsize=1,
            maxsize=self.cfg.maximum_connections,
            autocommit=False,
            init_command=f"SET SESSION TRANSACTION ISOLATION LEVEL {self.isolation}",
        )
        t = self.table
        async with self.pool.acquire() as con, con.cursor() as cur:
            await cur.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (t,),
            )
            (exists,) = await cur.fetchone()
            if self.cfg.create_schema and not exists:
                index = ", INDEX queue_id (queue, id)" if self.cfg.create_index else ""
                await cur.execute(
                    f"CREATE TABLE {t} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                    f"queue VARCHAR(255) NOT NULL, body LONGBLOB NOT NULL, "
                    f"headers BLOB NOT NULL{index}) ENGINE=InnoDB"
                )
            await con.commit()

    async def close(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.terminate()
            await pool.wait_closed()

    async def insert(self, events: Sequence[Event], capacity: int) -> bool:
        async with self.pool.acquire() as con:
            try:
                async with con.cursor() as cur:
                    if capacity:
                        await cur.execute(
                            f"SELECT count(*) FROM {self.table} WHERE queue = %s", (self.queue,)
                        )
                        (n,) = await cur.fetchone()
                        if n + len(events) > capacity:
                            await con.rollback()
                            return False
                    # asyncmy turns this into one multi-row INSERT.
                    await cur.executemany(
                        f"INSERT INTO {self.table} (queue, body, headers) VALUES (%s, %s, %s)",
                        [(self.queue, e.body, _encode_headers(e.headers)) for e in events],
                    )
                await con.commit()
            except BaseException:
                await _quiet_rollback(con)
                raise
        return True

    async def claim(self, n: int) -> tuple[Any, list[tuple[int, Event]]]:
        con = await self.pool.acquire()
        try:
            async with con.cursor() as cur:
                await cur.execute(
                    f"SELECT id, body, headers FROM {self.table} WHERE queue = %s "
                    "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (self.queue, n),
                )
                rows = await cur.fetchall()
        except BaseException:
            await _quiet_rollback(con)
            self.pool.release(con)
            raise
        if not rows:
            await _quiet_rollback(con)
            self.pool.release(con)
            return None, []
        return con, [(r[0], _decode(r[1], r[2])) for r in rows]

    async def finish(self, claim: Any, ids: list[int]) -> None:
        con = claim
        try:
            async with con.cursor() as cur:
                marks = ",".join(["%s"] * len(ids))
                await cur.execute(f"DELETE FROM {self.table} WHERE id IN ({marks})", ids)
            await con.commit()
        except BaseException:
            await _quiet_rollback(con)
            raise
        finally:
            self.pool.release(con)

    async def release(self, claim: Any) -> None:
        con = claim
        try:
            await _quiet_rollback(con)
        finally:
            self.pool.release(con)

    async def count(self) -> int:
        async with self.pool.acquire() as con, con.cursor() as cur:
            await cur.execute(f"SELECT count(*) FROM {self.table} WHERE queue = %s", (self.queue,))
            (n,) = await cur.fetchone()
            await con.rollback()
            return int(n)


async def _quiet_rollback(con: Any) -> None:
    try:
        await con.rollback()
    except Exception:  # noqa: BLE001 - a dead connection has nothing left to roll back
        con.close()


#: Database errors of both drivers (and the connection failures under them).
def _db_errors() -> tuple[type[BaseException], ...]:
    import asyncmy.errors
    import asyncpg

    return (asyncpg.PostgresError, asyncpg.InterfaceError, asyncmy.errors.Error, OSError)


class JdbcTransaction(Transaction):
    __slots__ = ("_claim", "_ids", "_put")

    channel: JdbcChannel

    def __init__(self, channel: JdbcChannel) -> None:
        super().__init__(channel)
        self._put: list[Event] = []
        self._claim: Any = None
        self._ids: list[int] = []

    async def _do_put(self, events: Sequence[Event]) -> None:
        ch = self.channel
        if len(self._put) + len(events) > ch.transaction_capacity:
            raise ChannelError(
                f"Channel {ch.name}: a transaction of {len(self._put) + len(events)} events "
                f"exceeds transactionCapacity {ch.transaction_capacity}."
            )
        self._put.extend(events)
        ch.counter.EventPutAttemptCount += len(events)

    async def _do_take(self, max_events: int, timeout: float) -> list[Event]:
        ch = self.channel
        n = min(max_events, ch.transaction_capacity) - len(self._ids)
        if n <= 0 or self._claim is not None:
            return []  # one claim per take transaction
        ch.counter.EventTakeAttemptCount += 1
        deadline = time.monotonic() + timeout
        while True:
            wake = ch._changed
            claim, rows = await ch._db(ch.backend.claim(n))
            if rows:
                self._claim = claim
                self._ids = [r[0] for r in rows]
                return [r[1] for r in rows]
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            if not ch.backend.notifies:
                left = min(left, ch.config.pollInterval / 1000)
            try:
                await asyncio.wait_for(wake.wait(), left)
            except TimeoutError:
                pass

    async def _do_commit(self) -> None:
        ch = self.channel
        if self._put:
            deadline = time.monotonic() + ch.config.keep_alive
            while not await ch._db(ch.backend.insert(self._put, ch.config.maximum_capacity)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChannelFullError(
                        f"Channel {ch.name} is full: maximum.capacity "
                        f"{ch.config.maximum_capacity} reached."
                    )
                await asyncio.sleep(min(left, ch.config.pollInterval / 1000))
            ch.counter.EventPutSuccessCount += len(self._put)
            ch._size += len(self._put)
            ch._wake()
        elif self._claim is not None:
            claim, self._claim = self._claim, None
            await ch._db(ch.backend.finish(claim, self._ids))
            ch.counter.EventTakeSuccessCount += len(self._ids)
            ch._size = max(0, ch._size - len(self._ids))

    async def _do_rollback(self) -> None:
        self._put = []
        claim, self._claim = self._claim, None
        if claim is not None:
            try:
                await self.channel.backend.release(claim)
            except _db_errors():
                pass  # the connection is gone: the database already released the claim
            self.channel._wake()


class JdbcChannel(Channel):
    """Events in a table of a database server; see the module docstring."""

    Config = JdbcChannelConfig
    config: JdbcChannelConfig

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        self._changed = asyncio.Event()
        self._size = 0
        self._counting: asyncio.Task[None] | None = None
        self._counted_at = 0.0
        self._warn_db = RateLimitedLog(log)
        self._warn_count = RateLimitedLog(log)
        self.backend: _Backend

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _db(self, aw: Any) -> Any:
        """Await a database call; its failures become retriable ChannelErrors."""
        try:
            return await aw
        except _db_errors() as e:
            self._warn_db.warn("Channel %s: database error: %s", self.name, e)
            raise ChannelError(f"Channel {self.name}: database error: {e}") from e

    def transaction(self) -> JdbcTransaction:
        return JdbcTransaction(self)

    @property
    def capacity(self) -> int:
        return self.config.maximum_capacity

    @property
    def transaction_capacity(self) -> int:
        return self.config.transactionCapacity

    @property
    def size(self) -> int:
        """The last count of this queue's rows (all agents), kept current by this agent's
        own commits and re-counted in the background at most every 2 s when read."""
        stale = time.monotonic() - self._counted_at > 2
        if (
            stale
            and self.state.value == "RUNNING"
            and (self._counting is None or self._counting.done())
        ):
            self._counted_at = time.monotonic()
            self._counting = asyncio.get_running_loop().create_task(self._recount())
        return self._size

    async def _recount(self) -> None:
        try:
            self._size = await self.backend.count()
        except _db_errors() as e:
            self._warn_count.warn("Channel %s: counting events failed: %s", self.name, e)

    async def start(self) -> None:
        cfg = self.config
        conn = parse_url(cfg.driver_url)
        if cfg.connection_properties_file:
            try:
                props = _read_properties(cfg.connection_properties_file)
            except OSError as e:
                raise ComponentStartError(
                    f"channel {self.name}: connection.properties.file "
                    f"{cfg.connection_properties_file}: {e.strerror or e}"
                ) from None
            conn["user"] = props.get("user", conn["user"])
            conn["password"] = props.get("password", conn["password"])
        conn["user"] = cfg.db_username or conn["user"]
        conn["password"] = cfg.db_password or conn["password"]
        kind: Literal["postgresql", "mysql"] = conn["scheme"]
        backend_cls = _Postgres if kind == "postgresql" else _MySql
        self.backend = backend_cls(cfg, conn, cfg.queue or self.name)
        try:
            await self.backend.open(self._wake)
            self._size = await self.backend.count()
        except _db_errors() as e:
            await self.backend.close()
            where = f"{conn['host']}:{conn['port']}/{conn['database'] or ''}"
            raise ComponentStartError(
                f"channel {self.name}: cannot use the {kind} database at {where}: {e}"
            ) from None
        self._counted_at = time.monotonic()
        await super().start()

    async def stop(self) -> None:
        await stop_task(self._counting, 2.0)
        backend = getattr(self, "backend", None)
        if backend is not None:
            await backend.close()
        await super().stop()
