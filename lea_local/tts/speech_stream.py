"""Speech for a given text, streamed while it is synthesised (POST /v1/audio/speech).

The text is normalised for the locale and cut into sentences (the first one at its first pause,
so that the first audio comes sooner); each is synthesised in turn through the speech queue (the
CPU slot it shares with the other engines) and its samples go, as Piper yields them, into one
ffmpeg encoder per request, whose output is handed on as it comes. Nothing is stored.

The request's deadline (`current_deadline`) stops the work: a sentence waiting for the CPU
leaves the queue, one being synthesised stops at its next chunk, and the encoder is killed."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lea_local.runtime.cancellation import GenerationCancelled
from lea_local.runtime.inference_queue import InferenceQueue, current_deadline
from lea_local.runtime.observability import count
from lea_local.tts.base import SpeechSynthesizer
from lea_local.tts.encode import AudioFormat, encoder_command
from lea_local.tts.normalize import normalize_for_speech
from lea_local.tts.sentences import split_first_phrase, split_sentences
from lea_local.tts.speech import SpeechFailed

log = logging.getLogger(__name__)


def spoken_phrases(text: str, locale: str) -> list[str]:
    """What is synthesised, in order: the sentences of `text` (the first cut at its first
    pause), each normalised for the locale; empty when nothing in it can be said aloud."""
    sentences = split_sentences(text)
    if not sentences:
        return []
    phrases = split_first_phrase(sentences[0]) + sentences[1:]
    spoken = (normalize_for_speech(phrase, locale) for phrase in phrases)
    return [phrase for phrase in spoken if phrase.strip()]


@dataclass
class SpeechTimings:
    audio_seconds: float = 0.0
    synthesis_seconds: float = 0.0
    """Seconds Piper computed (inside the CPU slot)."""
    cpu_wait_seconds: float = 0.0
    """Seconds the sentences waited for the CPU (another engine's turn)."""
    first_phrase_seconds: float = 0.0
    """The first phrase's synthesis alone, as Piper computed it."""
    first_byte_seconds: float = 0.0
    """From the start of the work to the first encoded byte handed on."""
    total_seconds: float = 0.0
    bytes: int = 0


async def stream_speech(
    phrases: list[str],
    synthesizer: SpeechSynthesizer,
    queue: InferenceQueue,
    audio_format: AudioFormat,
    emit: Callable[[bytes], None],
    *,
    speed: float = 1.0,
) -> SpeechTimings:
    """Synthesise `phrases` (see `spoken_phrases`) and `emit` the encoded audio as it comes,
    from any thread, in order; returns once every byte was emitted. Raises GenerationCancelled
    when the request's deadline ended, SpeechFailed when the encoder failed."""
    deadline = current_deadline.get()
    cancel = deadline.cancel if deadline is not None else threading.Event()
    timings = SpeechTimings()
    started = time.perf_counter()

    def hand_on(data: bytes) -> None:  # in the encoder's reader thread
        if not timings.bytes:
            timings.first_byte_seconds = time.perf_counter() - started
        timings.bytes += len(data)
        emit(data)

    encoder = spare_encoders.take(audio_format, synthesizer.sample_rate)
    reader = threading.Thread(target=_pump, args=(encoder, hand_on), name="speech-encoder", daemon=True)
    reader.start()

    def synthesize(text: str) -> tuple[int, float]:  # in a worker thread, holding the CPU slot
        computing = time.perf_counter()
        samples = 0
        assert encoder.stdin is not None
        for chunk in synthesizer.synthesize(text, speed=speed):
            if cancel.is_set():
                raise GenerationCancelled("request ended during speech synthesis")
            # Each chunk (a sentence, as Piper yields them) goes to the encoder at once.
            encoder.stdin.write(chunk.astype("<i2").tobytes())
            encoder.stdin.flush()
            samples += len(chunk)
        return samples, time.perf_counter() - computing

    samples, spoken = 0, 0
    try:
        for phrase in phrases:
            queued = time.perf_counter()
            phrase_samples, computed = await queue.run(synthesize, phrase)
            samples += phrase_samples
            timings.synthesis_seconds += computed
            timings.cpu_wait_seconds += time.perf_counter() - queued - computed
            if spoken == 0:
                timings.first_phrase_seconds = computed
            spoken += 1
        if samples == 0:
            raise SpeechFailed("the input had nothing to say aloud")
        await asyncio.to_thread(_finish, encoder, reader)
    except GenerationCancelled:
        log.info(
            "speech stopped: the request ended",
            extra={
                "event": "tts.stream_stopped",
                "reason": deadline.reason if deadline is not None else None,
                "phrases_done": spoken,
                "phrases": len(phrases),
            },
        )
        raise
    finally:
        if encoder.poll() is None:  # the request ended, or synthesis failed: stop the encoder
            encoder.kill()
            await asyncio.to_thread(encoder.wait)
        # The next request's encoder starts now, not during its first sentence.
        threading.Thread(target=spare_encoders.replenish, args=(audio_format, synthesizer.sample_rate)).start()
    timings.audio_seconds = samples / synthesizer.sample_rate
    timings.total_seconds = time.perf_counter() - started
    count("audio_synthesised", timings.audio_seconds)
    log.info(
        "speech streamed",
        extra={
            "event": "tts.stream",
            "voice": synthesizer.voice_name,
            "format": audio_format,
            "phrases": len(phrases),
            "audio_seconds": round(timings.audio_seconds, 3),
            "tts_seconds": round(timings.synthesis_seconds, 3),
            "cpu_wait_seconds": round(timings.cpu_wait_seconds, 3),
            "first_phrase_seconds": round(timings.first_phrase_seconds, 3),
            "first_byte_seconds": round(timings.first_byte_seconds, 3),
            "total_seconds": round(timings.total_seconds, 3),
            "bytes": timings.bytes,
        },
    )
    return timings


def _start_encoder(audio_format: AudioFormat, sample_rate: int) -> subprocess.Popen:
    return subprocess.Popen(
        encoder_command(audio_format, sample_rate),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


class SpareEncoders:
    """One idle encoder per format and sample rate, started ahead of the request that takes it.
    Measured on 2 cores: ffmpeg starting (about 60 ms of CPU) while the first sentence was
    synthesised slowed that synthesis by 30%, which the first byte waits for. An idle spare
    waits on its input; if the server dies, that input closes and the spare exits."""

    def __init__(self) -> None:
        self._spares: dict[tuple[str, int], subprocess.Popen] = {}
        self._lock = threading.Lock()

    def take(self, audio_format: AudioFormat, sample_rate: int) -> subprocess.Popen:
        with self._lock:
            spare = self._spares.pop((audio_format, sample_rate), None)
        if spare is not None and spare.poll() is None:
            return spare
        return _start_encoder(audio_format, sample_rate)

    def replenish(self, audio_format: AudioFormat, sample_rate: int) -> None:
        key = (audio_format, sample_rate)
        with self._lock:
            if key in self._spares and self._spares[key].poll() is None:
                return
        encoder = _start_encoder(audio_format, sample_rate)
        with self._lock:
            current = self._spares.get(key)
            if current is None or current.poll() is not None:
                self._spares[key] = encoder
                return
        encoder.kill()  # another request replenished meanwhile
        encoder.wait()


spare_encoders = SpareEncoders()


def _pump(encoder: subprocess.Popen, hand_on: Callable[[bytes], None]) -> None:
    assert encoder.stdout is not None
    while data := encoder.stdout.read1(65536):
        hand_on(data)


def _finish(encoder: subprocess.Popen, reader: threading.Thread) -> None:
    """Close the encoder's input and wait until its last bytes were handed on."""
    assert encoder.stdin is not None
    encoder.stdin.close()
    if encoder.wait(timeout=60) != 0:
        raise SpeechFailed(f"the audio encoder failed (exit {encoder.returncode})")
    reader.join(timeout=60)
