"""Where generated speech is kept (`AudioStore`, the protocol both stores implement), and the
store on disk: under unguessable names, for a limited time.

The directory may be shared by several replicas (one disk, or NFS): a reply's audio is written
there while it is encoded, as `<name>.part`, renamed to `<name>` when complete, or to
`<name>.failed` (a marker) when synthesis fails. Any replica can thus serve it, also while
another replica is still synthesising it (`follow`). Each of those steps is one rename, so at
any instant at most one of the three exists."""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

log = logging.getLogger(__name__)

# token_urlsafe(24) gives 32 characters of [A-Za-z0-9_-]: 192 random bits. A reply's audio may
# have one file per sentence too (a streamed turn's), named after it: "<reply's>-<index>.mp3".
AUDIO_NAME = re.compile(r"[A-Za-z0-9_-]{32}(?:-\d{1,4})?\.(?:mp3|ogg|wav)")
REPLY_AUDIO_NAME = re.compile(r"([A-Za-z0-9_-]{32})\.(mp3|ogg|wav)")

PARTIAL_SUFFIX = ".part"
FAILED_SUFFIX = ".failed"

HEARTBEAT_SECONDS = 1.0
"""How often a synthesising replica touches its partial file while the job is alive and not
stalled (waiting for text or for the CPU counts as alive), so that a reader on another replica
tells a slow synthesis from a dead one without comparing clocks."""
FOLLOW_POLL_SECONDS = 0.1
"""How often a reader checks a partial file for new bytes (polling works on NFS; inotify does
not see another machine's writes)."""
_READ_LIMIT = 1 << 20


@dataclass(frozen=True)
class StoredAudio:
    """A stored file's whole content, read at once (a reply's audio is at most a few MB), so that
    a file removed or expired meanwhile cannot break a response whose headers are already sent."""

    data: bytes
    modified: float
    etag: str
    """Strong: a stored file never changes once written (name, size and mtime identify it)."""


class AudioState(enum.Enum):
    PARTIAL = "partial"
    COMPLETE = "complete"
    FAILED = "failed"


class AudioIncomplete(Exception):
    """Audio followed from the shared directory did not complete: synthesis failed or stalled
    (`erased` False), or the audio was erased or expired meanwhile (`erased` True)."""

    def __init__(self, reason: str, *, erased: bool = False) -> None:
        super().__init__(reason)
        self.erased = erased


FollowedStep = tuple[bytes, int, AudioState | None, object]
"""One look at audio being written elsewhere: the new bytes, the position after them, where the
audio stands (None: unknown, erased or expired), and a signature that changes with any sign of
life of its writer."""


async def follow_audio(step: Callable[[int], FollowedStep], stall_timeout: float) -> AsyncIterator[bytes]:
    """Every byte of audio another replica is writing, as `step(position)` (run in a worker
    thread, from position 0) finds it, until it is complete. Raises AudioIncomplete, before or
    after the first byte, when the writer marks a failure, the audio is erased, or its signature
    shows no sign of life for `stall_timeout` seconds (a killed or stuck writer). The shared
    directory and the database (`database_audio_store`) each give their own `step`."""
    stall_timeout = max(stall_timeout, 3 * HEARTBEAT_SECONDS)
    position = 0
    signature: object = None
    changed_at = time.monotonic()
    while True:
        data, position, state, seen = await asyncio.to_thread(step, position)
        if data:
            yield data
        if state is AudioState.COMPLETE:
            return
        if state is AudioState.FAILED:
            raise AudioIncomplete("speech synthesis failed")
        if state is None:
            raise AudioIncomplete("audio not found or expired", erased=True)
        if data or seen != signature:
            signature, changed_at = seen, time.monotonic()
            if data:
                continue
        elif time.monotonic() - changed_at > stall_timeout:
            raise AudioIncomplete(f"speech synthesis stalled for {stall_timeout:g} s")
        await asyncio.sleep(FOLLOW_POLL_SECONDS)


class PartialAudioWriter(Protocol):
    """The writing side of a reply's audio while it is encoded (`AudioStore.open_partial`): the
    encoder's output appended as it comes (from any thread), then published under its name,
    marked failed, or discarded. Readers on other replicas follow it meanwhile."""

    size: int
    """Bytes written so far."""

    def write(self, data: bytes) -> None:
        """Append; a failure is kept (the audio cannot be published), not raised."""

    def finish_writing(self, head: bytes = b"") -> None:
        """No more bytes: overwrite the first ones with `head` (a WAV header's final sizes).
        Raises OSError, also for an earlier failed write."""

    def heartbeat(self) -> bool:
        """A sign of life for readers elsewhere; False when the audio was erased meanwhile."""

    def publish(self) -> bool:
        """Make the complete audio public under its name; False when it was erased meanwhile."""

    def fail(self) -> None:
        """Readers elsewhere stop at once with an error; the bytes go."""

    def discard(self) -> None:
        """Nothing is left of it (its turn failed, or it was erased)."""


class AudioStore(Protocol):
    """Where generated speech is kept for its time to live, under unguessable names, for every
    replica that shares it: a directory (`TtsAudioStore`) or the conversation database
    (`lea_local.tts.database_audio_store.DatabaseAudioStore`). Blocking, except `follow`."""

    ttl_seconds: float

    @property
    def directory(self) -> Path | str:
        """Where the audio lives, as log messages name it."""

    def is_usable(self) -> bool:
        """Whether new audio can be written now (else a turn answers without audio)."""

    def new_name(self, extension: str) -> str:
        """A new public name: unguessable, it is the audio's only credential."""

    def sentence_name(self, name: str, index: int) -> str:
        """The name of one spoken piece's audio within the reply's audio `name`: erasing the
        reply's audio erases it too."""

    def open_partial(self, name: str) -> PartialAudioWriter:
        """Start writing a reply's audio where every replica sees it. Raises OSError."""

    def stage(self, name: str, data: bytes) -> Any:
        """Store audio under `name`, not yet public; returns what this store's `commit` and
        `discard_staged` take."""

    def commit(self, staged: Any, name: str) -> None:
        """Make staged audio public, at once and whole."""

    def discard_staged(self, staged: Any) -> None: ...

    def write(self, name: str, data: bytes) -> None:
        """Store complete audio, public at once."""

    def read(self, name: str) -> StoredAudio | None:
        """The complete audio of a public name; None: malformed, unknown, unfinished or expired."""

    def state(self, name: str) -> AudioState | None:
        """Where a public name's audio stands; None: unknown, erased or expired."""

    def follow(self, name: str, stall_timeout: float) -> AsyncIterator[bytes]:
        """Every byte of audio another replica is writing, as it comes (`follow_audio`)."""

    def delete(self, names: list[str]) -> int:
        """Delete these names' audio, each reply's pieces with it; returns how many entries went."""

    def sweep(self) -> int:
        """Delete what outlived the time to live; returns how many entries went."""


class PartialAudio:
    """The writing side of `<name>.part`: the encoder's output appended as it comes (from any
    thread), then published under its name, marked failed, or discarded."""

    def __init__(self, directory: Path, name: str) -> None:
        self.name = name
        self.path = directory / f"{name}{PARTIAL_SUFFIX}"
        self._final = directory / name
        self._failed = directory / f"{name}{FAILED_SUFFIX}"
        self._file: BinaryIO | None = self.path.open("xb")
        self._lock = threading.Lock()
        self.size = 0
        self.write_error: OSError | None = None

    def write(self, data: bytes) -> None:
        """Append and flush, so that readers elsewhere see the bytes at once. A write error is
        kept (`write_error`: the audio cannot be published) rather than raised into the pump
        that drains the encoder."""
        with self._lock:
            if self._file is None or self.write_error is not None:
                return
            try:
                self._file.write(data)
                self._file.flush()
                self.size += len(data)
            except OSError as exc:
                self.write_error = exc

    def finish_writing(self, head: bytes = b"") -> None:
        """No more bytes: overwrite the first bytes with `head` (a WAV header whose sizes are now
        known; the rest of the file is unchanged) and close. Raises OSError."""
        with self._lock:
            if self._file is None:
                return
            try:
                if self.write_error is not None:
                    raise self.write_error
                if head:
                    self._file.seek(0)
                    self._file.write(head)
                self._file.close()
            finally:
                self._file = None

    def heartbeat(self) -> bool:
        """Touch the file (a sign of life for readers elsewhere); False when it is gone: the audio
        was erased, by another replica perhaps."""
        try:
            os.utime(self.path)
            return True
        except FileNotFoundError:
            return False

    def publish(self) -> bool:
        """Make the complete file public under its name; False when it was erased meanwhile."""
        self._close()
        try:
            os.replace(self.path, self._final)
            return True
        except FileNotFoundError:
            return False

    def fail(self) -> None:
        """Leave an empty marker, so that readers elsewhere stop at once with an error; the bytes
        go. The marker comes first: a reader never finds neither (see `TtsAudioStore.state`)."""
        self._close()
        try:
            if self.path.exists():  # else erased meanwhile: nothing to mark
                self._failed.touch()
                self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("a failed speech's partial file could not be marked: %s", exc)

    def discard(self) -> None:
        self._close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("a discarded speech's partial file could not be deleted: %s", exc)

    def _close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
                self._file = None


class TtsAudioStore:
    """The `AudioStore` in a directory (shared by the replicas: one disk, or NFS)."""

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

    def open_partial(self, name: str) -> PartialAudio:
        """Start writing a reply's audio where every replica sees it. Raises OSError."""
        return PartialAudio(self.directory, name)

    def stage(self, name: str, data: bytes) -> Path:
        """Write the file under a hidden temporary name; `commit` makes it public."""
        staged = self.directory / f".{name}.tmp"
        staged.write_bytes(data)
        return staged

    def commit(self, staged: Path, name: str) -> None:
        os.replace(staged, self.directory / name)  # a reader sees the whole file or none

    def discard_staged(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def write(self, name: str, data: bytes) -> None:
        self.commit(self.stage(name, data), name)

    def resolve(self, name: str) -> Path | None:
        """The file for a public name, or None: malformed names (traversal included), missing
        files and expired files all look the same."""
        if not AUDIO_NAME.fullmatch(name):
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

    def state(self, name: str) -> AudioState | None:
        """Where a public name's audio stands in the shared directory; None: unknown, erased or
        expired. Checked in the order the writer renames (partial, then complete or failed), so
        that a rename between two checks cannot make existing audio look missing."""
        if not AUDIO_NAME.fullmatch(name):
            return None
        if self._fresh(self.directory / f"{name}{PARTIAL_SUFFIX}"):
            return AudioState.PARTIAL
        if self._fresh(self.directory / name):
            return AudioState.COMPLETE
        if self._fresh(self.directory / f"{name}{FAILED_SUFFIX}"):
            return AudioState.FAILED
        return None

    def _fresh(self, path: Path) -> bool:
        try:
            return time.time() - path.stat().st_mtime <= self.ttl_seconds
        except FileNotFoundError:
            return False

    def follow(self, name: str, stall_timeout: float) -> AsyncIterator[bytes]:
        """Every byte of audio another replica is writing, as its partial file grows, then the
        rest of the complete file (`follow_audio`; a sign of life: growth or heartbeat)."""
        return follow_audio(functools.partial(self._follow_step, name), stall_timeout)

    def _follow_step(self, name: str, offset: int) -> FollowedStep:
        """Bytes past `offset` (a byte offset), where the audio stands, and the partial file's
        (size, mtime)."""
        partial = self.directory / f"{name}{PARTIAL_SUFFIX}"
        try:
            info = partial.stat()
            with partial.open("rb") as file:
                file.seek(offset)
                data = file.read(_READ_LIMIT)
                return data, offset + len(data), AudioState.PARTIAL, (info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            pass  # published, failed or erased: the same order as `state`
        try:
            # Opened anew (not the partial file's handle): on NFS, close-to-open consistency
            # guarantees every byte the writer wrote before its rename.
            with (self.directory / name).open("rb") as file:
                file.seek(offset)
                data = file.read()
                return data, offset + len(data), AudioState.COMPLETE, None
        except FileNotFoundError:
            pass
        if (self.directory / f"{name}{FAILED_SUFFIX}").exists():
            return b"", offset, AudioState.FAILED, None
        return b"", offset, None, None

    def delete(self, names: list[str]) -> int:
        """Delete these files, each reply's sentence files, partial file and failure marker with
        it; returns files deleted."""
        deleted = 0
        for name in names:
            if not AUDIO_NAME.fullmatch(name):
                continue
            paths = [self.directory / name]
            if reply := REPLY_AUDIO_NAME.fullmatch(name):  # the name's characters are not glob patterns
                paths += [self.directory / f"{name}{PARTIAL_SUFFIX}", self.directory / f"{name}{FAILED_SUFFIX}"]
                paths += self.directory.glob(f"{reply.group(1)}-*.{reply.group(2)}")
            for path in paths:
                try:
                    path.unlink()
                    deleted += 1
                except FileNotFoundError:
                    pass
        return deleted

    def sweep(self) -> int:
        """Delete files older than the TTL; returns how many. That includes partial files a
        killed replica left (a live one's heartbeat keeps its own fresh) and failure markers."""
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
