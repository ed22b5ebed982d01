"""Events kept in the store, so `events` shows what happened before a restart.

Two named databases of the store:
    events       seq (8 bytes, big-endian: key order is seq order) -> event map
    event_jobs   job id + "/" + seq (8) -> b""; a job's events, to read them or delete them with the job

Events are not written one transaction each: the loop appends them to a
Pending buffer, and the store's next write transaction takes them along
(Store._write), or a flush the daemon asks for about once a second when
nothing else was written. A crash loses at most that last second.

The store keeps them bounded: housekeeping prunes the oldest beyond
`events_max` or older than `events_max_age_h` a batch per transaction, and a
job's events leave with the job (retention).
"""

from __future__ import annotations

import collections
import logging
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb
import msgpack

log = logging.getLogger(__name__)
R = TypeVar("R")

_SEQ = struct.Struct(">Q")
PENDING_CAP = 20_000  # events waiting for a write; beyond it (a stuck store) the oldest are dropped, memory stays bounded


def _pack(event: dict[str, Any]) -> bytes | None:
    try:
        return msgpack.packb(event, use_bin_type=True, default=str)
    except (ValueError, TypeError, UnicodeError) as exc:
        # An odd field must never fail the state change whose transaction carries the event.
        log.warning("event %s seq %s not kept in the store: %s", event.get("kind"), event.get("seq"), exc)
        return None


def _unpack(raw: bytes) -> dict[str, Any]:
    return msgpack.unpackb(raw, raw=False)


def _job_key(job: str, seq: int) -> bytes:
    return job.encode() + b"/" + _SEQ.pack(seq)


class Pending:
    """Events emitted on the loop and not yet written; the store thread takes them. Thread-safe."""

    def __init__(self, cap: int = PENDING_CAP) -> None:
        self._items: collections.deque[dict[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self.cap = cap
        self.dropped = 0

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._items) >= self.cap:
                self._items.popleft()
                self.dropped += 1
            self._items.append(event)

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def put_back(self, items: list[dict[str, Any]]) -> None:
        """Return taken events whose transaction did not commit, ahead of newer ones, keeping seq order."""
        with self._lock:
            self._items.extendleft(reversed(items))
            while len(self._items) > self.cap:
                self._items.popleft()
                self.dropped += 1

    def __len__(self) -> int:
        return len(self._items)


class EventDbs:
    """The store's two event databases, and what is done with them inside the store's transactions."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.events = env.open_db(b"events")
        self.by_job = env.open_db(b"event_jobs")

    def all(self) -> tuple[Any, Any]:
        return self.events, self.by_job

    def put(self, txn: lmdb.Transaction, events: Iterable[dict[str, Any]]) -> int:
        written = 0
        for event in events:
            raw = _pack(event)
            if raw is None:
                continue
            seq = int(event["seq"])
            txn.put(_SEQ.pack(seq), raw, db=self.events)
            if event.get("job"):
                txn.put(_job_key(str(event["job"]), seq), b"", db=self.by_job)
            written += 1
        return written

    def last_seq(self, txn: lmdb.Transaction) -> int:
        cur = txn.cursor(db=self.events)
        return _SEQ.unpack(cur.key())[0] if cur.last() else 0

    def count(self, txn: lmdb.Transaction) -> int:
        return int(txn.stat(self.events)["entries"])

    def read(self, txn: lmdb.Transaction, job: str | None, limit: int, kinds: Iterable[str] | None,
             after: int, before: int | None) -> list[dict[str, Any]]:
        """The newest `limit` events with after < seq < before (of a job, of some kinds), oldest first."""
        wanted = None if kinds is None else frozenset(kinds)
        picked: list[dict[str, Any]] = []
        for seq, raw in self._newest_first(txn, job, before):
            if seq <= after:
                break
            if raw is None:
                continue  # an index entry whose event was pruned
            event = _unpack(raw)
            if wanted is None or event["kind"] in wanted:
                picked.append(event)
                if len(picked) >= limit:
                    break
        picked.reverse()
        return picked

    def _newest_first(self, txn: lmdb.Transaction, job: str | None,
                      before: int | None) -> Iterator[tuple[int, bytes | None]]:
        if job is None:
            cur = txn.cursor(db=self.events)
            found = cur.set_range(_SEQ.pack(before)) if before is not None else False
            found = cur.prev() if found else cur.last()
            while found:
                yield _SEQ.unpack(cur.key())[0], cur.value()
                found = cur.prev()
            return
        prefix = job.encode() + b"/"
        cur = txn.cursor(db=self.by_job)
        end = _job_key(job, before) if before is not None else prefix + b"\xff" * 9
        found = cur.prev() if cur.set_range(end) else cur.last()
        while found and cur.key().startswith(prefix):
            seq = _SEQ.unpack(cur.key()[len(prefix):])[0]
            yield seq, txn.get(_SEQ.pack(seq), db=self.events)
            found = cur.prev()

    def prune(self, txn: lmdb.Transaction, keep: int, older_than: float, limit: int) -> tuple[int, bool]:
        """Delete up to `limit` of the oldest events beyond the newest `keep`, or from before `older_than`
        (a time; 0: no age limit); returns (deleted, more to delete)."""
        excess = max(0, self.count(txn) - keep)
        cur = txn.cursor(db=self.events)
        found = cur.first()
        doomed: list[tuple[bytes, dict[str, Any]]] = []
        while found and len(doomed) < limit:
            event = _unpack(cur.value())
            if len(doomed) >= excess and not event.get("time", 0) < older_than:
                break
            doomed.append((cur.key(), event))
            found = cur.next()
        for key, event in doomed:  # read first: deleting moves the cursor's ground
            txn.delete(key, db=self.events)
            if event.get("job"):
                txn.delete(_job_key(str(event["job"]), _SEQ.unpack(key)[0]), db=self.by_job)
        return len(doomed), len(doomed) >= limit

    def delete_job(self, txn: lmdb.Transaction, job: str, limit: int) -> int:
        """Delete up to `limit` of a job's events; returns how many (fewer than limit: none are left)."""
        prefix = job.encode() + b"/"
        cur = txn.cursor(db=self.by_job)
        keys: list[bytes] = []
        found = cur.set_range(prefix)
        while found and len(keys) < limit and cur.key().startswith(prefix):
            keys.append(cur.key())
            found = cur.next()
        for key in keys:
            txn.delete(key, db=self.by_job)
            txn.delete(key[len(prefix):], db=self.events)
        return len(keys)


class StoredEvents:
    """The Store's event methods (mixed into Store, run on the store thread like the rest)."""

    event_dbs: EventDbs
    pending_events: Pending
    meta: Any

    if TYPE_CHECKING:  # Store's own
        def _write(self, fn: Callable[[lmdb.Transaction], R]) -> R: ...
        def _read(self, fn: Callable[[lmdb.Transaction], R]) -> R: ...

    def flush_events(self) -> int:
        """Write the waiting events now (when no other write took them along); returns how many waited."""
        waiting = len(self.pending_events)
        if waiting:
            self._write(lambda txn: None)  # _write takes the waiting events into its transaction
        return waiting

    def last_event_seq(self) -> int:
        return self._read(self.event_dbs.last_seq)

    def event_count(self) -> int:
        return self._read(self.event_dbs.count)

    def read_events(self, job: str | None = None, limit: int = 100, kinds: list[str] | None = None, after: int = 0,
                    before: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` stored events with after < seq < before, of a job or some kinds, oldest first."""
        return self._read(lambda txn: self.event_dbs.read(txn, job, limit, kinds, after, before))

    def prune_events(self, keep: int, older_than: float, limit: int) -> tuple[int, bool]:
        """One transaction of pruning (EventDbs.prune): returns (deleted, more to delete)."""
        return self._write(lambda txn: self.event_dbs.prune(txn, keep, older_than, limit))

    def mark_started(self, run: dict[str, Any]) -> dict[str, Any]:
        """Record that a daemon runs on this store; returns how the previous run ended:
        {"clean": bool|None (None: no run recorded, a new store or one from before runs were), "pid"?, "started"?}."""
        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any]:
            running = txn.get(b"run", db=self.meta)
            if running is not None:
                before = msgpack.unpackb(running, raw=False)
                previous = {"clean": False, "pid": before.get("pid"), "started": before.get("started")}
            else:
                previous = {"clean": True if txn.get(b"stopped", db=self.meta) is not None else None}
            txn.put(b"run", msgpack.packb(run, use_bin_type=True), db=self.meta)
            return previous
        return self._write(txn_fn)

    def mark_stopped(self, when: float) -> None:
        """This run ends cleanly; the waiting events (daemon_stopped last) go in the same transaction."""
        def txn_fn(txn: lmdb.Transaction) -> None:
            txn.delete(b"run", db=self.meta)
            txn.put(b"stopped", msgpack.packb(when), db=self.meta)
        self._write(txn_fn)
