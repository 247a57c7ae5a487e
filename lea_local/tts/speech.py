"""Speech for Léa's replies, off the critical path.

A `SpeechJob` is created when a turn starts speaking: its audio URL is valid at once, so the
JSON answer never waits for speech. The job synthesises sentence by sentence (Piper) into one
streaming encoder (ffmpeg: one continuous MP3/Ogg/WAV stream, not a concatenation of files),
so that a GET on the URL can play the first sentence while the last is being synthesised. The
encoded stream is also written, as it comes, to a partial entry in the `AudioStore` (a file in
the shared directory, or rows in the database), published under the audio's name when complete:
a GET on another replica sharing that store streams it from there (`AudioStore.follow`); this
replica's GETs read the job's memory, then the complete audio (`SpeechService.find_audio`).

Two ways to feed a job, chosen per device (`LEA_TTS_OVERLAP`):
- after the reply: the whole reply text once the LLM is done (CPU-only machines, where speech
  and generation would fight over the same cores);
- during generation: each sentence as soon as the LLM completes it (LLM on a GPU, Piper on the
  CPU: the first sentence is spoken while the LLM still writes the rest).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio.to_thread
import numpy as np

from lea_local.locales import Locale
from lea_local.runtime.inference_queue import InferenceQueue, QueueFull
from lea_local.runtime.observability import count, count_rejection
from lea_local.tts.audio_store import (
    HEARTBEAT_SECONDS,
    AudioIncomplete,
    AudioState,
    AudioStore,
    PartialAudioWriter,
    StoredAudio,
)
from lea_local.tts.base import SpeechSynthesizer
from lea_local.tts.encode import MEDIA_TYPES, AudioFormat, encode_audio, encoder_command, finalize
from lea_local.tts.normalize import normalize_for_speech
from lea_local.tts.sentences import SentenceSplitter, split_first_phrase

log = logging.getLogger(__name__)


class SpeechFailed(Exception):
    pass


@dataclass(frozen=True)
class AudioStream:
    """Audio still being synthesised, by this replica or another, from its first bytes on."""

    media_type: str
    chunks: AsyncIterator[bytes]
    """Its bytes as they come, the first already there (a failure before them was raised
    instead); raises AudioIncomplete when synthesis fails, stalls or is erased meanwhile."""


class SpeechJob:
    """One reply's speech: text in (from any thread), encoded audio out (to any number of
    readers, from the first byte)."""

    def __init__(
        self,
        name: str,
        audio_format: AudioFormat,
        loop: asyncio.AbstractEventLoop,
        *,
        sentence_files: bool = False,
        partial: PartialAudioWriter | None = None,
    ) -> None:
        """`partial`: where the encoded stream is also written for other replicas (None: memory
        only, as in narrow tests)."""
        self.name = name
        self.partial = partial
        self.audio_format = audio_format
        self.media_type = MEDIA_TYPES[audio_format]
        self.loop = loop
        self.created = time.monotonic()
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._splitter = SentenceSplitter()
        self._text_lock = threading.Lock()
        self._fed_any_text = False
        self._chunks: list[bytes] = []
        self._size = 0
        self.done = False
        self.error: str | None = None
        self.erased = False
        self.abandoned = False  # its turn failed: the name was never handed out
        self.cpu_wait_seconds = 0.0  # its sentences' time waiting for the CPU (another engine's)
        self._queued_at = 0.0
        # Waiting for the reply's text or for the CPU (another engine's turn): not a stall.
        self._idle = True
        self._changed = asyncio.Event()
        self._progress = 0  # counts `_notify` calls: the heartbeat's sign of progress
        # A streamed turn's: each spoken piece also stored as its own file, announced here as
        # (name, index) when written; None once there will be no more.
        self.sentence_audio: asyncio.Queue[tuple[str, int] | None] | None = asyncio.Queue() if sentence_files else None
        self.pieces_written: list[str] = []  # those pieces' names, once public

    # --- text in ----------------------------------------------------------------------------

    def feed(self, text: str) -> None:
        """Streamed reply text; complete sentences go to synthesis. Safe from any thread."""
        with self._text_lock:
            self._fed_any_text = self._fed_any_text or bool(text.strip())
            for sentence in self._splitter.feed(text):
                self.loop.call_soon_threadsafe(self.sentences.put_nowait, sentence)

    def finish_text(self, fallback: str | None = None) -> None:
        """The reply is complete (`fallback`: what to say when nothing was fed)."""
        with self._text_lock:
            if not self._fed_any_text and fallback:
                self._splitter.feed(fallback)
            for sentence in self._splitter.flush():
                self.loop.call_soon_threadsafe(self.sentences.put_nowait, sentence)
            self.loop.call_soon_threadsafe(self.sentences.put_nowait, None)

    def cancel(self, reason: str) -> None:
        """The turn failed: no speech for it."""
        self.loop.call_soon_threadsafe(self._fail, reason)
        self.loop.call_soon_threadsafe(self.sentences.put_nowait, None)

    def abandon(self) -> None:
        """Its turn failed: the name was never handed out, and nothing is left of its audio
        (`SpeechService.abandon` also deletes the pieces already written)."""
        self.abandoned = True
        self.cancel("the turn failed")

    # --- audio out --------------------------------------------------------------------------

    def _notify(self) -> None:  # on the event loop: any progress restarts the stall timer
        self._progress += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_idle(self, idle: bool) -> None:  # on the event loop
        if idle != self._idle:
            self._idle = idle
            self._notify()

    def _append(self, data: bytes) -> None:  # on the event loop
        self._chunks.append(data)
        self._size += len(data)
        self._notify()

    def _finish(self) -> None:  # on the event loop
        self.done = True
        self._notify()

    def _fail(self, reason: str) -> None:  # on the event loop
        if not self.done and self.error is None:
            self.error = reason
            self._notify()

    def audio_bytes(self) -> bytes:
        return b"".join(self._chunks)

    async def _next_change(self, timeout: float) -> None:
        """Wait until the job moves on. SpeechFailed when it is working (synthesising,
        encoding, storing) yet shows no progress for `timeout` seconds; waiting for the CPU
        while another engine holds it, or for the reply's text, is not a stall."""
        while True:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout)
                return
            except TimeoutError:
                if not self._idle:
                    raise SpeechFailed(f"speech synthesis stalled for {timeout:g} s") from None

    async def stream(self, timeout: float) -> AsyncIterator[bytes]:
        """Every byte of the audio, as it comes. Raises SpeechFailed, before or after the first
        byte, when synthesis fails, is erased or stalls (see `_next_change`); at once, with no
        byte, when it has already failed."""
        if self.error is not None and not self.done:
            raise SpeechFailed(self.error)
        sent = 0
        while True:
            if sent < len(self._chunks):
                data = b"".join(self._chunks[sent:])
                sent = len(self._chunks)
                yield data
                continue
            if self.done:
                return
            if self.error is not None:
                raise SpeechFailed(self.error)
            await self._next_change(timeout)

    async def wait_done(self, timeout: float) -> None:
        """Until the audio is complete and stored; SpeechFailed as for `stream`."""
        while not self.done:
            if self.error is not None:
                raise SpeechFailed(self.error)
            await self._next_change(timeout)


class SpeechService:
    def __init__(
        self,
        synthesizer: SpeechSynthesizer,
        store: AudioStore,
        queue: InferenceQueue,
        audio_format: AudioFormat,
        *,
        overlap_generation: bool = False,
        max_jobs: int = 32,
        job_grace_seconds: float = 120.0,
        locale: Locale = "fr-CA",
    ) -> None:
        """`locale`: how numbers and symbols are read aloud (`lea_local.tts.normalize`)."""
        self.synthesizer = synthesizer
        self.locale = locale
        self.store = store
        self.queue = queue
        self.audio_format = audio_format
        self.overlap_generation = overlap_generation
        self.max_jobs = max_jobs
        self.job_grace_seconds = job_grace_seconds
        self._jobs: dict[str, SpeechJob] = {}
        self._tasks: set[asyncio.Task] = set()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, *, sentence_files: bool = False) -> SpeechJob | None:
        """A new job, already reachable by name; None when the audio directory is unusable (the
        turn then answers without audio, as the contract allows). `sentence_files`: also store
        each spoken piece on its own (`SpeechJob.sentence_audio`), for a streamed turn.

        Raises QueueFull (503, before the turn does any work) when `max_jobs` are under way:
        a turn that is admitted always gets its audio. `max_jobs` is sized from the turn queues
        (see `build_services`), so this only happens when speech lags far behind the turns."""
        self._forget_finished_jobs()
        if not self.store.is_usable():
            log.error("speech skipped: the audio directory %s is missing or read-only", self.store.directory)
            return None
        active = sum(1 for j in self._jobs.values() if not j.done and j.error is None)
        if active >= self.max_jobs:
            count_rejection(self.queue.name)
            log.warning("speech refused: %d syntheses already under way", active)
            raise QueueFull(f"the {self.queue.name} engine is busy; try again in a few seconds", 5, self.queue.name)
        name = self.store.new_name(self.audio_format)
        try:  # before the name is handed out: a GET on any replica finds the audio from now on
            partial = self.store.open_partial(name)
        except OSError as exc:
            log.error("speech skipped: the audio directory %s is not writable: %s", self.store.directory, exc)
            return None
        job = SpeechJob(
            name, self.audio_format, asyncio.get_running_loop(), sentence_files=sentence_files, partial=partial
        )
        self._jobs[job.name] = job
        task = asyncio.create_task(self._run(job), name=f"speech-{job.name[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def job(self, name: str) -> SpeechJob | None:
        return self._jobs.get(name)

    async def find_audio(self, name: str, *, streamed: bool, timeout: float) -> StoredAudio | AudioStream | None:
        """A reply's audio by its public name, wherever it is: this replica's job (its memory),
        the store, or another replica's synthesis followed through the store. Audio still being
        synthesised comes as it is written when `streamed` (a plain GET), else once complete (a
        range or a length needs it whole). None: unknown, erased or expired. Raises, before any
        byte, AudioIncomplete: synthesis failed or stalled, or (`erased`) the audio went meanwhile.
        `timeout`: the longest a synthesis may show no progress."""
        job = self.job(name)
        if job is not None and not job.done:
            if streamed:
                return await _first_bytes(_job_audio(job, timeout), job.media_type)
            try:
                await job.wait_done(timeout)
            except SpeechFailed as exc:
                raise AudioIncomplete(str(exc), erased=job.erased) from exc
        audio = await anyio.to_thread.run_sync(self.store.read, name)
        if audio is None and job is None:
            # Not this replica's job (or its job forgotten): another replica's, in the shared store?
            state = await anyio.to_thread.run_sync(self.store.state, name)
            if state is AudioState.FAILED:
                raise AudioIncomplete("speech synthesis failed")
            if state is AudioState.PARTIAL and (stream := await self._follow(name, streamed, timeout)):
                return stream
            if state is not None:
                audio = await anyio.to_thread.run_sync(self.store.read, name)
        return audio

    async def _follow(self, name: str, streamed: bool, timeout: float) -> AudioStream | None:
        """Audio another replica is synthesising into the shared store: as it is written when
        `streamed`, else None once it is complete (then read from the store)."""
        chunks = self.store.follow(name, timeout)
        log.info(
            "audio followed while another replica synthesises it",
            extra={"event": "tts.follow", "mode": "stream" if streamed else "wait"},
        )
        stream = await _first_bytes(chunks, MEDIA_TYPES[name.rsplit(".", 1)[1]])
        if streamed:
            return stream
        async for _ in stream.chunks:
            pass
        return None

    async def render(self, text: str) -> str | None:
        """Speak a whole text (after-the-reply mode); returns the audio name at once."""
        job = self.start()
        if job is None:
            return None
        job.feed(text)
        job.finish_text()
        return job.name

    def reply_written(self, job: SpeechJob, reply: str) -> None:
        """The turn's reply is complete and stored: speak it whole (after-the-reply mode), or
        end the text fed as it was written (overlap mode; `reply` is said when none was)."""
        if not self.overlap_generation:
            job.feed(reply)
            job.finish_text()
            return
        log.info(
            "reply complete; speech under way",
            extra={"event": "tts.overlap", "audio_bytes_before_reply_end": job._size},
        )
        job.finish_text(fallback=reply)

    def abandon(self, job: SpeechJob) -> None:
        """The job's turn failed (or its request ended before it was stored): stop its speech,
        and delete the pieces it already wrote (a streamed turn's client may have been given
        their URLs). On the event loop, as the pieces' commit is: none is written after this.
        Safe to call again."""
        job.abandon()
        written, job.pieces_written = job.pieces_written, []
        if written:
            try:
                self.store.delete(written)
            except Exception as exc:  # the sweep removes them once they expire
                log.error("an abandoned reply's audio pieces could not be deleted: %s", exc)

    def erase(self, names: list[str]) -> int:
        """Stop the jobs and delete the files of these audio names; returns files deleted.
        On the event loop, like the job's last step (`_publish`): a job erased before it
        published never writes its file, one erased after has its file deleted here."""
        for name in names:
            job = self._jobs.pop(name, None)
            if job is not None:
                job.erased = True
                if not job.done:
                    job.cancel("erased")
        return self.store.delete(names)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _forget_finished_jobs(self) -> None:
        now = time.monotonic()
        for name, job in list(self._jobs.items()):
            if (job.done or job.error) and now - job.created > self.job_grace_seconds:
                del self._jobs[name]

    # --- the work -----------------------------------------------------------------------------

    async def _run(self, job: SpeechJob) -> None:
        encoder: subprocess.Popen | None = None
        reader: threading.Thread | None = None
        # The encoder process starts while the first sentence is synthesised, not after it.
        encoder_starting = asyncio.ensure_future(asyncio.to_thread(self._start_encoder, job))
        started = time.perf_counter()
        synth_seconds = 0.0
        audio_samples = 0
        pieces: asyncio.Queue[np.ndarray | None] | None = None
        published = False
        heartbeat = asyncio.create_task(self._heartbeat(job), name=f"heartbeat-{job.name[:8]}")
        if job.sentence_audio is not None:
            pieces = asyncio.Queue()
            writer = asyncio.create_task(self._write_sentence_files(job, pieces), name=f"sentences-{job.name[:8]}")
            self._tasks.add(writer)
            writer.add_done_callback(self._tasks.discard)
        try:
            while True:
                job._set_idle(True)  # waiting for the reply's text
                sentence = await job.sentences.get()
                if sentence is None or job.error is not None:
                    break
                for phrase in split_first_phrase(sentence) if encoder is None else [sentence]:
                    spoken = normalize_for_speech(phrase, self.locale)
                    if not spoken:
                        continue
                    job._queued_at = time.perf_counter()
                    job._set_idle(True)  # waiting for the CPU: `_synthesize` says when it starts
                    pcm = await self.queue.run(self._synthesize, job, spoken)
                    synth_seconds += time.perf_counter() - job._queued_at
                    if encoder is None:
                        encoder, reader = await encoder_starting
                    audio_samples += len(pcm)
                    if pieces is not None and len(pcm):  # nothing to play: no file
                        pieces.put_nowait(pcm)
                    await asyncio.to_thread(self._write_pcm, encoder, pcm)
            job._set_idle(False)
            if job.error is not None:
                return
            if encoder is None:
                raise SpeechFailed("the reply had nothing to say aloud")
            await asyncio.to_thread(self._close_encoder, encoder, reader)
            streamed = job.audio_bytes()
            data = finalize(streamed, self.audio_format)
            if job.partial is not None:
                await asyncio.to_thread(self._finish_partial, job.partial, streamed, data)
            published = self._publish(job, data)
            if not published:
                return
            count("audio_synthesised", audio_samples / self.synthesizer.sample_rate)
            log.info(
                "speech synthesised",
                extra={
                    "event": "tts",
                    "audio_seconds": round(audio_samples / self.synthesizer.sample_rate, 3),
                    "tts_seconds": round(synth_seconds - job.cpu_wait_seconds, 3),
                    "cpu_wait_seconds": round(job.cpu_wait_seconds, 3),
                    "total_seconds": round(time.perf_counter() - started, 3),
                    "bytes": len(data),
                },
            )
        except asyncio.CancelledError:
            job._fail("the server is shutting down")
            raise
        except Exception as exc:
            log.error("speech synthesis failed: %s", exc, exc_info=not isinstance(exc, (SpeechFailed, QueueFull)))
            job._fail("speech synthesis failed")
        finally:
            heartbeat.cancel()
            if job.partial is not None and not published:
                # Readers on other replicas stop at once: with an error, or a 404 once erased.
                if job.erased or job.abandoned:
                    job.partial.discard()
                else:
                    job.partial.fail()
            if pieces is not None:
                pieces.put_nowait(None)
            if encoder is None and not encoder_starting.cancelled():
                try:
                    encoder, reader = await asyncio.shield(encoder_starting)
                except Exception:
                    encoder = None
            if encoder is not None and encoder.poll() is None:
                encoder.kill()
                encoder.wait()

    async def _write_sentence_files(self, job: SpeechJob, pieces: asyncio.Queue[np.ndarray | None]) -> None:
        """Each spoken piece's samples encoded on their own into a small file of its own, while
        the next piece is synthesised; announced in order on `job.sentence_audio`."""
        assert job.sentence_audio is not None
        index = 0
        try:
            while (pcm := await pieces.get()) is not None:
                name = self.store.sentence_name(job.name, index)
                data = await asyncio.to_thread(encode_audio, pcm, self.synthesizer.sample_rate, self.audio_format)
                staged = await asyncio.to_thread(self.store.stage, name, data)
                # On the event loop, as `erase` and `abandon` are: an erased or abandoned job
                # never leaves a file behind.
                if job.erased or job.abandoned or job.error is not None:
                    self.store.discard_staged(staged)
                    return
                self.store.commit(staged, name)
                job.pieces_written.append(name)
                job.sentence_audio.put_nowait((name, index))
                index += 1
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("a sentence's audio file could not be written: %s", exc)
        finally:
            job.sentence_audio.put_nowait(None)

    def _publish(self, job: SpeechJob, data: bytes) -> bool:
        """On the event loop, as `erase` is: nothing can erase between the check and the rename.
        Another replica may have erased the partial file meanwhile: then nothing is published."""
        if job.erased or job.error is not None:
            log.info("speech discarded: %s", job.error or "erased", extra={"event": "tts.discarded"})
            return False
        if job.partial is None:
            self.store.write(job.name, data)
        elif not job.partial.publish():
            self._erased_elsewhere(job)
            return False
        job._finish()
        return True

    def _erased_elsewhere(self, job: SpeechJob) -> None:  # on the event loop
        log.info("speech discarded: erased", extra={"event": "tts.discarded"})
        job.erased = True
        job.cancel("erased")

    @staticmethod
    def _finish_partial(  # in a worker thread
        partial: PartialAudioWriter, streamed: bytes, final: bytes
    ) -> None:
        if partial.size != len(streamed):
            raise SpeechFailed(f"the audio file holds {partial.size} of {len(streamed)} bytes")
        # `finalize` changes only a WAV header's sizes; the rest of the file is already right.
        head = bytes(final[:4096]) if final != streamed else b""
        partial.finish_writing(head)

    async def _heartbeat(self, job: SpeechJob) -> None:
        """Touch the partial file while the job lives and is not stalled (by the rule of
        `SpeechJob._next_change`), for readers on other replicas; stop the job when another
        replica erased it."""
        if job.partial is None:
            return
        progress = job._progress
        while not job.done and job.error is None:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if job._idle or job._progress != progress:
                progress = job._progress
                alive = await asyncio.to_thread(job.partial.heartbeat)
                if not alive and not job.done and job.error is None:  # not published or failed meanwhile
                    self._erased_elsewhere(job)
                    return

    def _synthesize(self, job: SpeechJob, text: str) -> np.ndarray:  # in a worker thread
        job.cpu_wait_seconds += time.perf_counter() - job._queued_at
        job.loop.call_soon_threadsafe(job._set_idle, False)  # has the CPU now: a stall would count
        chunks = []
        for chunk in self.synthesizer.synthesize(text):
            chunks.append(chunk)
            job.loop.call_soon_threadsafe(job._notify)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def _start_encoder(self, job: SpeechJob) -> tuple[subprocess.Popen, threading.Thread]:
        command = encoder_command(self.audio_format, self.synthesizer.sample_rate)
        encoder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

        def pump() -> None:
            assert encoder.stdout is not None
            while data := encoder.stdout.read1(65536):
                if job.partial is not None:
                    job.partial.write(data)  # first to the file, so that it is never behind memory
                job.loop.call_soon_threadsafe(job._append, data)

        reader = threading.Thread(target=pump, name=f"encoder-{job.name[:8]}", daemon=True)
        reader.start()
        return encoder, reader

    @staticmethod
    def _write_pcm(encoder: subprocess.Popen, pcm: np.ndarray) -> None:
        assert encoder.stdin is not None
        encoder.stdin.write(pcm.astype("<i2").tobytes())
        encoder.stdin.flush()

    @staticmethod
    def _close_encoder(encoder: subprocess.Popen, reader: threading.Thread | None) -> None:
        assert encoder.stdin is not None
        encoder.stdin.close()
        if encoder.wait(timeout=60) != 0:
            raise SpeechFailed(f"the audio encoder failed (exit {encoder.returncode})")
        if reader is not None:
            reader.join(timeout=60)


async def _job_audio(job: SpeechJob, timeout: float) -> AsyncIterator[bytes]:
    """The job's audio as it is written (`SpeechJob.stream`), its failures as AudioIncomplete."""
    try:
        async for chunk in job.stream(timeout=timeout):
            yield chunk
    except SpeechFailed as exc:
        raise AudioIncomplete(str(exc), erased=job.erased) from exc


async def _first_bytes(chunks: AsyncIterator[bytes], media_type: str) -> AudioStream:
    """`chunks` once its first bytes are there: an answer's status must tell a failure, so the
    audio is waited for first."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    return AudioStream(media_type, rest())
