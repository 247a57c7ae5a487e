"""What the semantic retrievers (vectors.py, dense.py) share: an in-memory snapshot of the
passages' vectors, rebuilt when a cheap version stamp of the passages in the database changes
(another replica, or this one, added or removed documents)."""

from __future__ import annotations

import threading
from typing import Generic, Protocol, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Connection


class Stamped(Protocol):
    stamp: tuple


S = TypeVar("S", bound=Stamped)


class StampedPassageCache(Generic[S]):
    """`current` returns the snapshot for the database's present stamp, calling the subclass's
    `_rebuild(connection, stamp)` when it changed (once, however many searches ask at once)."""

    _STAMP = text(
        "SELECT count(*), coalesce(sum(id), 0), (SELECT max(updated_at) FROM knowledge_documents) "
        "FROM knowledge_passages"
    )
    # A passage id alone does not say its text is unchanged: SQLite reuses the ids of deleted rows.
    # Its document's updated_at does (a document's passages are only ever replaced together).
    _VERSIONS = text(
        "SELECT p.id, d.updated_at FROM knowledge_passages p JOIN knowledge_documents d ON d.id = p.document_id"
    )

    def __init__(self) -> None:
        self._snapshot: S | None = None
        self._refresh = threading.Lock()

    def current(self, connection: Connection) -> S:
        """The cache, brought up to date with the database first if its stamp changed."""
        stamp = tuple(connection.execute(self._STAMP).one())
        snapshot = self._snapshot
        if snapshot is not None and snapshot.stamp == stamp:
            return snapshot
        with self._refresh:
            snapshot = self._snapshot
            if snapshot is None or snapshot.stamp != stamp:
                snapshot = self._rebuild(connection, stamp)
                self._snapshot = snapshot
        return snapshot

    def _rebuild(self, connection: Connection, stamp: tuple) -> S:
        raise NotImplementedError
