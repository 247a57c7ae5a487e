"""Generated speech on disk, under unguessable names, for a limited time."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# token_urlsafe(24) gives 32 characters of [A-Za-z0-9_-]: 192 random bits. A reply's audio may
# have one file per sentence too (a streamed turn's), named after it: "<reply's>-<index>.mp3".
_NAME = re.compile(r"[A-Za-z0-9_-]{32}(?:-\d{1,4})?\.(?:mp3|ogg|wav)")
_REPLY_NAME = re.compile(r"([A-Za-z0-9_-]{32})\.(mp3|ogg|wav)")


@dataclass(frozen=True)
class StoredAudio:
    """A stored file's whole content, read at once (a reply's audio is at most a few MB), so that
    a file removed or expired meanwhile cannot break a response whose headers are already sent."""

    data: bytes
    modified: float
    etag: str
    """Strong: a stored file never changes once written (name, size and mtime identify it)."""


class TtsAudioStore:
    def __init__(self, directory: Path, ttl_seconds: float) -> None:
        self.directory = directory
        self.ttl_seconds = ttl_seconds
        directory.mkdir(parents=True, exist_ok=True)

    def is_usable(self) -> bool:
        return self.directory.is_dir() and os.access(self.directory, os.W_OK)

    def new_name(self, extension: str) -> str:
        return f"{secrets.token_urlsafe(24)}.{extension}"

    @staticmethod
    def sentence_name(name: str, index: int) -> str:
        """The name of one sentence's audio within the reply's audio `name`: erasing the reply's
        audio (`delete`) erases it too."""
        stem, extension = name.rsplit(".", 1)
        return f"{stem}-{index}.{extension}"

    def stage(self, name: str, data: bytes) -> Path:
        """Write the file under a hidden temporary name; `commit` makes it public."""
        staged = self.directory / f".{name}.tmp"
        staged.write_bytes(data)
        return staged

    def commit(self, staged: Path, name: str) -> Path:
        path = self.directory / name
        os.replace(staged, path)  # a reader sees the whole file or none
        return path

    def write(self, name: str, data: bytes) -> Path:
        return self.commit(self.stage(name, data), name)

    def resolve(self, name: str) -> Path | None:
        """The file for a public name, or None: malformed names (traversal included), missing
        files and expired files all look the same."""
        if not _NAME.fullmatch(name):
            return None
        path = self.directory / name
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return None
        return path if age <= self.ttl_seconds else None

    def read(self, name: str) -> StoredAudio | None:
        """The stored audio of a public name, or None (like `resolve`; also when the file goes
        away between the lookup and the read)."""
        path = self.resolve(name)
        if path is None:
            return None
        try:
            with path.open("rb") as file:
                info = os.fstat(file.fileno())
                data = file.read()
        except (FileNotFoundError, IsADirectoryError):
            return None
        tag = hashlib.blake2b(f"{name}:{info.st_size}:{info.st_mtime_ns}".encode(), digest_size=12).hexdigest()
        return StoredAudio(data=data, modified=info.st_mtime, etag=f'"{tag}"')

    def delete(self, names: list[str]) -> int:
        """Delete these files, and each reply's sentence files with it; returns files deleted."""
        deleted = 0
        for name in names:
            if not _NAME.fullmatch(name):
                continue
            paths = [self.directory / name]
            if reply := _REPLY_NAME.fullmatch(name):  # the name's characters are not glob patterns
                paths += self.directory.glob(f"{reply.group(1)}-*.{reply.group(2)}")
            for path in paths:
                try:
                    path.unlink()
                    deleted += 1
                except FileNotFoundError:
                    pass
        return deleted

    def sweep(self) -> int:
        """Delete files older than the TTL; returns how many."""
        limit = time.time() - self.ttl_seconds
        deleted = 0
        for path in self.directory.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < limit:
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:
                continue
        if deleted:
            log.info("expired speech files deleted", extra={"event": "tts.sweep", "deleted": deleted})
        return deleted
