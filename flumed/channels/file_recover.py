"""`flumed file-channel-recover`: salvage a damaged file-channel database.

Run with the agent stopped (it takes the directory's lock, as a channel does):

    flumed file-channel-recover --dir DIR [--channel NAME]

1. The damaged database (and its -wal) is renamed `<name>.db.damaged-<time>`, and is
   never written to again: it stays for inspection.
2. Every readable batch is read from a scratch copy: a forward scan by id, a backward
   scan, then each id between them one at a time, so that one damaged page costs only
   the rows on it. A batch whose checksum or encoding is wrong is left out. A file cut
   short (shorter than its header says) is padded back to its size with zeros first,
   so SQLite reads every page that is still there.
3. The readable batches go into a fresh database under the original name, in their
   order and with their taken-offsets, fsynced; the channel starts from it.

The report says how many events and batches were saved and how many batches were lost.
The command exits 1 when it saved nothing from a file that held data (or was damaged).
Blocking I/O on purpose: this is a command-line tool, not part of the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import struct
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flumed.channels.file import (
    APPLICATION_ID,
    CREATE_PRAGMAS,
    CREATE_SCRIPT,
    INSERT_BATCH,
    SCHEMA_VERSION,
    DirLock,
    db_path,
    decode_batch,
)
from flumed.channels.file_crypto import is_encrypted
from flumed.errors import ChannelError

#: Ids probed one by one between the forward and the backward scan, at most.
MAX_PROBES = 10_000_000
#: Pages of an empty channel database: the header/schema page, a pointer map, 3 tables.
EMPTY_PAGES = 5

Row = tuple[int, int, int, bytes]  # id, count, crc, data


@dataclass
class Report:
    path: Path
    moved_to: Path | None = None
    batches: int = 0
    events: int = 0
    lost_batches: int = 0
    notes: list[str] = field(default_factory=list)
    #: Evidence the file held events (pages in use, cut short, unreadable batches):
    #: saving nothing from it is then a failure.
    held_data: bool = False

    def text(self) -> str:
        lost = self.lost_batches
        lines = [
            f"{self.path}: recovered {self.events} events in {self.batches} batches; "
            + (
                f"{lost} batch{'es' if lost != 1 else ''} could not be read and "
                f"{'are' if lost != 1 else 'is'} lost."
                if lost
                else "every batch found could be read."
            )
        ]
        if self.moved_to is not None:
            lines.append(f"The damaged database was kept as {self.moved_to}.")
        lines += self.notes
        return "\n".join(lines)


def _sidecars(path: Path) -> list[tuple[Path, str]]:
    return [(Path(f"{path}{s}"), s) for s in ("-wal", "-shm")]


def _scan(conn: sqlite3.Connection, sql: str, args: tuple[int, ...] = ()) -> Iterator[Row]:
    """Rows of a query, up to the first error."""
    try:
        cur = conn.execute(sql, args)
        while True:
            row = cur.fetchone()
            if row is None:
                return
            yield row
    except sqlite3.DatabaseError:
        return


def _readable(row: Row) -> bool:
    _, count, crc, data = row
    if not isinstance(data, bytes) or zlib.crc32(data) != crc:
        return False
    if is_encrypted(data):
        return True  # its checksum holds; the content needs the keys (not read here)
    try:
        return len(decode_batch(data)) == count
    except (ValueError, TypeError):
        return False


def pad_truncated(path: Path, report: Report) -> None:
    """A database cut short: pad it with zeros to the size its header records (and to
    whole pages), so the pages still there can be read. Notes what it did in `report`;
    also notes whether the file held data (pages in use beyond an empty database)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return  # not a database at all: no evidence it held anything
    (page_size,) = struct.unpack_from(">H", head, 16)
    page_size = 65536 if page_size == 1 else page_size
    pages, free = struct.unpack_from(">I", head, 28)[0], struct.unpack_from(">I", head, 36)[0]
    if pages - free > EMPTY_PAGES:
        report.held_data = True
    want = max(pages * page_size, -(-size // page_size) * page_size)
    if want > size:
        report.held_data = True
        with open(path, "r+b") as f:
            f.truncate(want)
        report.notes.append(
            f"The file was {want - size} bytes shorter than its header says (cut short); "
            "the missing part was read as empty pages."
        )


def salvage(path: Path, report: Report) -> tuple[list[Row], dict[int, int]]:
    """Read what can be read from the database at `path` (a scratch copy: it may change).

    Raises:
        ChannelError: the file is a database of another kind or of a newer version.
    """
    conn = sqlite3.connect(path)
    try:
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as e:
            report.notes.append(f"The database header cannot be read ({e}); nothing to save.")
            return [], {}
        if app_id not in (0, APPLICATION_ID):
            raise ChannelError(f"{report.path} is not a flumed file-channel database.")
        if version > SCHEMA_VERSION:
            raise ChannelError(
                f"{report.path} has schema version {version}, newer than this flumed "
                f"({SCHEMA_VERSION}); use the newer flumed's recover command."
            )
        select = "SELECT id, count, crc, data FROM batches"
        found: dict[int, Row] = {}
        forward = list(_scan(conn, f"{select} ORDER BY id"))
        for r in forward:
            found[r[0]] = r
        low = forward[-1][0] if forward else 0
        backward = list(_scan(conn, f"{select} WHERE id > ? ORDER BY id DESC", (low,)))
        for r in backward:
            found[r[0]] = r
        high = backward[-1][0] if backward else None
        if high is None:
            with contextlib.suppress(sqlite3.DatabaseError):
                top = conn.execute("SELECT max(id) FROM batches").fetchone()[0]
                high = None if top is None else top + 1
        if high is not None and high - low > 1:
            if high - low > MAX_PROBES:
                report.notes.append(f"Ids {low + 1}..{high - 1} were too many to probe.")
            else:
                # An id that fails to read was a batch on a damaged page; one that reads
                # as nothing was a batch taken in full (deleted) or never used.
                for rid in range(low + 1, high):
                    try:
                        r = conn.execute(f"{select} WHERE id = ?", (rid,)).fetchone()
                    except sqlite3.DatabaseError:
                        report.lost_batches += 1
                        continue
                    if r is not None:
                        found[rid] = r
        offsets: dict[int, int] = {}
        try:
            offsets = dict(conn.execute("SELECT id, first FROM offsets").fetchall())
        except sqlite3.DatabaseError:
            report.notes.append(
                "The taken-offsets could not be read: partly taken batches are restored "
                "whole, so some events may be delivered twice."
            )
        rows = []
        for rid in sorted(found):
            r = found[rid]
            if _readable(r):
                rows.append(r)
            else:
                report.lost_batches += 1
        if not found and report.lost_batches == 0 and not forward:
            with contextlib.suppress(sqlite3.DatabaseError):
                conn.execute("SELECT count(*) FROM batches").fetchone()
                return rows, offsets  # readable and empty
            report.notes.append("The table of batches cannot be read at all.")
            report.held_data = True
        return rows, offsets
    finally:
        conn.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fresh(path: Path, rows: list[Row], offsets: dict[int, int]) -> None:
    """Create a new database at `path` holding `rows`, durably."""
    conn = sqlite3.connect(path)
    try:
        for pragma in CREATE_PRAGMAS:
            conn.execute(pragma)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(CREATE_SCRIPT)
        conn.executemany(INSERT_BATCH, rows)
        ids = {r[0] for r in rows}
        conn.executemany(
            "INSERT INTO offsets (id, first) VALUES (?, ?)",
            [(i, f) for i, f in offsets.items() if i in ids and f > 0],
        )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def recover(path: Path) -> Report:
    """Move the damaged database aside and rebuild `path` from what it holds.

    The caller holds the directory's lock.

    Raises:
        ChannelError: nothing to recover, or a database this tool must not touch.
    """
    report = Report(path)
    if not path.exists():
        raise ChannelError(f"{path} does not exist.")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = path.with_name(f"{path.name}.damaged-{stamp}")
    scratch = path.with_name(f"{path.name}.salvage")
    for p in (scratch, *(s for s, _ in _sidecars(scratch))):
        p.unlink(missing_ok=True)
    shutil.copyfile(path, scratch)
    for side, suffix in _sidecars(path):
        if side.exists() and suffix == "-wal":
            shutil.copyfile(side, f"{scratch}{suffix}")
    try:
        pad_truncated(scratch, report)
        rows, offsets = salvage(scratch, report)
    finally:
        for p in (scratch, *(s for s, _ in _sidecars(scratch))):
            p.unlink(missing_ok=True)
    os.rename(path, moved)
    for side, suffix in _sidecars(path):
        if side.exists():
            if suffix == "-wal":
                os.rename(side, f"{moved}{suffix}")
            else:
                side.unlink()
    report.moved_to = moved
    fresh = path.with_name(f"{path.name}.new")
    for p in (fresh, *(s for s, _ in _sidecars(fresh))):
        p.unlink(missing_ok=True)
    write_fresh(fresh, rows, offsets)
    os.rename(fresh, path)
    _fsync_dir(path.parent)
    report.batches = len(rows)
    report.events = sum(r[1] - offsets.get(r[0], 0) for r in rows)
    if report.lost_batches:
        report.held_data = True
    return report


def cmd_recover(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        print(f"flumed file-channel-recover: {directory} is not a directory", file=sys.stderr)
        return 2
    if args.channel:
        path = db_path(directory, args.channel)
    else:
        dbs = sorted(directory.glob("*.db"))
        if len(dbs) != 1:
            found = ", ".join(p.name for p in dbs) or "none"
            print(
                f"flumed file-channel-recover: name the channel with --channel "
                f"(databases in {directory}: {found})",
                file=sys.stderr,
            )
            return 2
        path = dbs[0]
    lock = DirLock(directory)
    try:
        lock.acquire("flumed file-channel-recover")
    except ChannelError as e:
        print(f"flumed file-channel-recover: {e}", file=sys.stderr)
        return 1
    try:
        report = recover(path)
    except (ChannelError, OSError) as e:
        print(f"flumed file-channel-recover: {e}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    print(report.text())
    if report.events == 0 and report.held_data:
        print(
            f"flumed file-channel-recover: nothing could be saved from {path}, which held "
            f"data or was damaged; the file is kept as {report.moved_to}.",
            file=sys.stderr,
        )
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "file-channel-recover",
        help="salvage a damaged file-channel database (run with the agent stopped)",
        description="Copy every readable event of a damaged file-channel database into a "
        "fresh one; the damaged file is kept beside it. Run it with the agent stopped.",
    )
    p.add_argument("--dir", required=True, help="the channel's data directory")
    p.add_argument("--channel", help="the channel's name (optional with one database)")
    p.set_defaults(func=cmd_recover)
