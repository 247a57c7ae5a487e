"""One knowledge directory per database. The documents' rows live in the database, their files
in LEA_KNOWLEDGE_DIR: replicas that share a PostgreSQL database but each keep a private directory
see the same documents and different files, so a `reindex` on one deletes the rows of files it
cannot see, a DELETE on one leaves the file on the other, and the agency's thesaurus differs from
replica to replica. So the directory carries a marker file with an id, the database records the
id of the first directory that claimed it, and a replica whose directory carries another id (or
none, on a database already claimed) refuses to start, naming the directory to share.

SQLite is one machine's database, opened by one server: there the database simply follows its
directory (a directory replaced by a restored copy is adopted, with a warning)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lea_local.knowledge import tables

log = logging.getLogger(__name__)

MARKER = ".knowledge-directory-id"
"""The file, in the knowledge directory, that holds its id (reindex skips dot files; not
`.lea-`, the temporary files' prefix)."""


class KnowledgeDirectoryNotShared(Exception):
    """This replica's knowledge directory is not the one the database's documents live in."""


def directory_id(directory: Path) -> str:
    """The id in `directory`'s marker, written first when there is none. Replicas starting
    together on one shared directory agree on one id: the marker appears whole, by a hard link
    that fails if another replica's came first."""
    marker = directory / MARKER
    try:
        return _read(marker)
    except FileNotFoundError:
        pass
    draft = directory / f"{MARKER}.{uuid.uuid4().hex}.tmp"
    draft.write_text(str(uuid.uuid4()) + "\n")
    try:
        os.link(draft, marker)
    except FileExistsError:
        pass
    finally:
        draft.unlink(missing_ok=True)
    return _read(marker)


def _read(marker: Path) -> str:
    text = marker.read_text().strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise KnowledgeDirectoryNotShared(
            f"{marker} does not hold a knowledge directory id ({text[:40]!r}): restore it, or delete "
            "it if this directory holds no documents yet"
        ) from None


def claim_directory(engine: Engine, directory: Path) -> str | None:
    """Record `directory` as the database's knowledge directory, or check that it is the one
    recorded. Returns its id; raises KnowledgeDirectoryNotShared on PostgreSQL when another
    directory was recorded first. None when the directory cannot be marked (read-only)."""
    try:
        mine = directory_id(directory)
    except OSError as error:  # KnowledgeDirectoryNotShared is not one
        # A read-only directory (the storage tests' case, a mount gone read-only) changes nothing
        # while it stays so: the server starts, uploads answer 503 with the reason.
        log.warning("knowledge: cannot mark %s as the database's knowledge directory: %s", directory, error)
        return None
    row = {
        "slot": 1,
        "directory_id": mine,
        "first_path": str(directory.resolve()),
        "first_host": socket.gethostname(),
        "claimed_at": datetime.now(UTC),
    }
    try:
        with engine.begin() as connection:
            connection.execute(insert(tables.directory).values(**row))
        return mine
    except IntegrityError:  # claimed before: by this directory on an earlier start, or another
        pass
    with engine.connect() as connection:
        recorded = connection.execute(select(tables.directory).where(tables.directory.c.slot == 1)).one()
    if recorded.directory_id == mine:
        return mine
    if engine.dialect.name != "postgresql":
        log.warning(
            "knowledge: %s is not the directory this database's documents were first stored in (%s): "
            "adopting it; `lea-local knowledge reindex` makes the index match its files",
            directory,
            recorded.first_path,
        )
        with engine.begin() as connection:
            connection.execute(update(tables.directory).values(**row))
        return mine
    raise KnowledgeDirectoryNotShared(
        f"the knowledge directory {directory} (LEA_KNOWLEDGE_DIR) is not the one this PostgreSQL "
        f"database's documents live in: that one was first seen at {recorded.first_path} on "
        f"{recorded.first_host} (marker id {recorded.directory_id}). Replicas sharing a database must "
        "share one knowledge directory (a local disk for replicas on one machine, NFS across machines): "
        "set LEA_KNOWLEDGE_DIR to it on every replica (docs/scaling-out.md)"
    )
