"""`lea-local bench`: per-stage latencies of a turn, by direct engine calls and over HTTP.

Direct: decode (ffmpeg), ASR (with its real-time factor), LLM (prompt and generation tokens per
second), TTS (real-time factor), audio encoding, and the text and voice turns as the sum of
their engine calls. HTTP: the same text and voice turns against a real server started on
127.0.0.1 with the same settings, the time to the first byte of the reply's audio, and the
ratio HTTP/direct. Streamed and OpenAI-compatible routes: the time to the first streamed delta
(agent stream and /v1/chat/completions) against the engine's first token direct, a whole
/v1/chat/completions against the same generation direct, and the first audio byte of
/v1/audio/speech against the first phrase's synthesis direct. Voice to voice over /v1/realtime:
the clip streamed at the microphone's pace with server VAD, from `speech_stopped` (and from the
clip's last chunk) to the answer's first audio. Both ASR engines are compared on the same weights
when both are available.
Every figure is the median of --runs runs after one warm-up run. The machine and the settings
are printed with the numbers; `--json` writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from lea_local.asr.decode import decode_audio
from lea_local.settings import Settings
from lea_local.tools.realtime_bench import NOTES as REALTIME_NOTES
from lea_local.tools.realtime_bench import immoassist_round, realtime_round, utterance_pcm
from lea_local.tools.server_process import ServerProcess

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CLIP = REPO / "tests" / "fixtures" / "audio" / "fr" / "picovoice_cheetah_test_fr_v2.2.wav"
TEXT_MESSAGE = "Quels documents faut-il réunir pour mettre en vente un appartement ?"
SPEECH_TEXT = (
    "Bonjour, je suis Léa, votre assistante immobilière. La promesse d'achat est signée pour 550 000 $. "
    "Il reste à remettre la déclaration du vendeur au courtier de l'acheteur avant vendredi."
)
BENCH_KEY = "bench-key-not-secret"


@dataclass
class Measure:
    name: str
    unit: str = "s"
    values: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def machine_info() -> dict[str, object]:
    info: dict[str, object] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal"))
        info["memory_gib"] = round(int(mem.split()[1]) / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["gpu"] = gpu.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["gpu"] = None
    versions = {}
    for module in ("llama_cpp", "ctranslate2", "faster_whisper", "onnxruntime", "whisper", "torch", "litestar"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            pass
    info["versions"] = versions
    return info


def browser_recording(clip: Path) -> bytes:
    """The clip as Chrome records it: WebM/Opus, no duration in the header."""
    return subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(clip),
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-f",
            "webm",
            "pipe:1",
        ],
        capture_output=True,
        check=True,
    ).stdout


# ---------------------------------------------------------------------------------- direct


class DirectBench:
    """The engines in this process, called as the server calls them."""

    def __init__(self, settings: Settings) -> None:
        from lea_local.services import build_services

        started = time.perf_counter()
        self.settings = settings
        self.services = build_services(settings)
        self.services.warm_up()
        self.load_and_warm_up_s = time.perf_counter() - started
        assert self.services.voice is not None and self.services.speech is not None
        self.voice = self.services.voice
        self.engine = self.services.chat_engine
        self.synthesizer = self.services.speech.synthesizer

    def generate(self, message: str) -> tuple[float, float, object]:
        """(seconds to the first text, seconds in all, reply) for a new conversation."""
        from lea_local.store.conversations import ConversationContext

        prompt = self.services.turns.build_prompt(ConversationContext("bench", None, ()), message)
        first: list[float] = []
        started = time.perf_counter()
        reply = self.engine.generate(
            prompt,
            max_tokens=self.settings.llm_max_reply_tokens,
            temperature=self.settings.llm_temperature,
            on_text=lambda _: first or first.append(time.perf_counter()),
        )
        ended = time.perf_counter()
        return (first[0] if first else ended) - started, ended - started, reply

    def turn_round(self, recording: bytes) -> dict[str, object]:
        """A voice turn then a text turn, stage by stage (the order the HTTP round uses)."""
        t_decode, decoded = timed(lambda: self.voice.decode(recording))
        t_asr, transcript = timed(lambda: self.voice.transcribe(decoded))
        _, t_llm, reply = self.generate(transcript.text)
        _, t_text, _ = self.generate(TEXT_MESSAGE)
        # The same prompt again: its evaluated state is reused, as it is over HTTP when the
        # streamed and OpenAI-compatible requests repeat the text turn's prompt.
        text_first_token, t_text_warm, _ = self.generate(TEXT_MESSAGE)
        return {
            "text_first_token": text_first_token,
            "text_turn_warm": t_text_warm,
            "decode": t_decode,
            "asr": t_asr,
            "asr_rtf": t_asr / decoded.seconds,
            "llm_voice_reply": t_llm,
            "voice_turn_to_text": t_decode + t_asr + t_llm,
            "text_turn": t_text,
            "_transcript": transcript.text,
            "_reply": reply,
            "_audio_seconds": decoded.seconds,
        }

    def first_phrase_synthesis(self, text: str) -> float:
        """Seconds to synthesise the first phrase of `text`, as /v1/audio/speech cuts it."""
        from lea_local.tts.normalize import normalize_for_speech
        from lea_local.tts.sentences import split_first_phrase, split_sentences

        first = split_first_phrase(split_sentences(text)[0])[0]
        started = time.perf_counter()
        for _ in self.synthesizer.synthesize(normalize_for_speech(first, self.settings.locale)):
            pass
        return time.perf_counter() - started

    def speech_round(self, text: str) -> dict[str, float]:
        """TTS and encoding of a reply, and the LLM's cold prompt and generation speeds."""
        from lea_local.tts.encode import encode_audio
        from lea_local.tts.normalize import normalize_for_speech

        chunks: list[np.ndarray] = []
        first_chunk: list[float] = []
        started = time.perf_counter()
        for chunk in self.synthesizer.synthesize(normalize_for_speech(text, "fr-CA")):
            chunks.append(chunk)
            first_chunk or first_chunk.append(time.perf_counter() - started)
        t_tts = time.perf_counter() - started
        samples = np.concatenate(chunks)
        t_encode, _ = timed(lambda: encode_audio(samples, self.synthesizer.sample_rate, self.settings.tts_format))
        reset = getattr(self.engine, "reset_cache", None)
        if reset:
            reset()  # cold prompt: the whole prompt is evaluated
        ttft, total, reply = self.generate(TEXT_MESSAGE)
        result = {
            "tts": t_tts,
            "tts_rtf": t_tts / (len(samples) / self.synthesizer.sample_rate),
            "tts_first_sentence": first_chunk[0],
            "encode": t_encode,
            "llm_prompt_tps": reply.prompt_tokens / ttft,
        }
        if reply.completion_tokens > 1 and total > ttft:
            result["llm_generation_tps"] = (reply.completion_tokens - 1) / (total - ttft)
        return result

    def close(self) -> None:
        self.services.close()


def bench_asr_engines(settings: Settings, recording: bytes, runs: int, checkpoint: Path | None) -> dict[str, Measure]:
    """Both engines, same weights, same audio: faster-whisper and openai-whisper."""
    from lea_local.services import build_recognizer, resolve_model_paths

    results: dict[str, Measure] = {}
    if checkpoint is None or not checkpoint.is_file():
        return results
    try:
        import whisper  # noqa: F401
    except ImportError:
        return results
    samples = decode_audio(recording, max_seconds=120, timeout=60).samples
    fw_path = resolve_model_paths(settings).asr if settings.asr_engine == "faster-whisper" else settings.asr_model
    engines = {
        "faster-whisper": build_recognizer(settings.model_copy(update={"asr_engine": "faster-whisper"}), fw_path),
        "openai-whisper": build_recognizer(settings.model_copy(update={"asr_engine": "openai-whisper"}), checkpoint),
    }
    for name, recognizer in engines.items():
        measure = Measure(f"asr[{name}]", note=recognizer.model_name)
        for run in range(runs + 1):
            t, _ = timed(lambda r=recognizer: r.transcribe(samples))
            if run:
                measure.values.append(t)
        results[name] = measure
    return results


# ---------------------------------------------------------------------------------- HTTP


def http_round(client: httpx.Client, recording: bytes) -> dict[str, float]:
    """A voice turn (and its audio, fetched as a browser would), then a text turn."""
    headers = {"X-API-Key": BENCH_KEY}
    started = time.perf_counter()
    r = client.post(
        "/api/external/agent/chat/voice", files={"audio": ("r.webm", recording, "audio/webm")}, headers=headers
    )
    json_at = time.perf_counter()
    r.raise_for_status()
    url = r.json()["assistant_audio_url"]
    first_byte = complete = float("nan")
    if url:
        with client.stream("GET", url) as audio:
            for _ in audio.iter_raw():
                if first_byte != first_byte:  # nan until the first chunk
                    first_byte = time.perf_counter() - json_at
            complete = time.perf_counter() - json_at
    t_text, text = timed(
        lambda: client.post("/api/external/agent/chat", json={"message": TEXT_MESSAGE}, headers=headers)
    )
    text.raise_for_status()  # type: ignore[attr-defined]
    return {
        "http_voice_json": json_at - started,
        "http_audio_first_byte": first_byte,
        "http_audio_complete": complete,
        "http_text_turn": t_text,
    }


def first_sse_delta(client: httpx.Client, path: str, body: dict, is_delta: Callable[[dict], bool]) -> float:
    """Seconds from sending the request to the first event that `is_delta` accepts; the rest
    of the stream is read to its end (the next request must not queue behind it)."""
    started = time.perf_counter()
    first = float("nan")
    with client.stream("POST", path, json=body, headers={"Authorization": f"Bearer {BENCH_KEY}"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if first == first or not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if is_delta(json.loads(line[6:])):
                first = time.perf_counter() - started
    return first


def http_stream_round(client: httpx.Client, messages: list[dict[str, str]], speech_text: str) -> dict[str, float]:
    """Streamed turns and the OpenAI-compatible routes: first delta, whole completion, first
    audio byte of /v1/audio/speech."""
    bearer = {"Authorization": f"Bearer {BENCH_KEY}"}
    completion = {"model": "gpt-4o-mini", "messages": messages, "temperature": 0, "seed": 1}
    t_completion, answer = timed(lambda: client.post("/v1/chat/completions", json=completion, headers=bearer))
    answer.raise_for_status()  # type: ignore[attr-defined]
    agent_first = first_sse_delta(
        client, "/api/external/agent/chat/stream", {"message": TEXT_MESSAGE}, lambda event: bool(event.get("delta"))
    )
    openai_first = first_sse_delta(
        client,
        "/v1/chat/completions",
        {**completion, "stream": True},
        lambda event: bool(event.get("choices") and event["choices"][0]["delta"].get("content")),
    )
    started = time.perf_counter()
    speech_first = float("nan")
    body = {"model": "tts-1-hd", "voice": "shimmer", "input": speech_text, "response_format": "mp3"}
    with client.stream("POST", "/v1/audio/speech", json=body, headers=bearer) as audio:
        audio.raise_for_status()
        for _ in audio.iter_raw():
            if speech_first != speech_first:
                speech_first = time.perf_counter() - started
    return {
        "http_chat_completion": t_completion,
        "http_agent_stream_first_delta": agent_first,
        "http_openai_stream_first_delta": openai_first,
        "http_speech_first_byte": speech_first,
    }


# ---------------------------------------------------------------------------------- report


def print_table(title: str, measures: list[Measure]) -> None:
    print(f"\n{title}")
    print(f"  {'stage':<26} {'median':>10} {'unit':<6} {'runs':>4}  note")
    for measure in measures:
        value = measure.median
        text = f"{value:10.3f}" if measure.unit in ("s", "×") else f"{value:10.1f}"
        print(f"  {measure.name:<26} {text} {measure.unit:<6} {len(measure.values):>4}  {measure.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lea-local bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="measured runs per figure, after one warm-up (default 5)")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="a 4-6 s French utterance")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="where to write the numbers")
    parser.add_argument("--no-http", action="store_true", help="direct engine calls only")
    parser.add_argument(
        "--openai-checkpoint", type=Path, help="openai-whisper .pt on the same weights, to compare the engines"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("AGENT_API_KEY", BENCH_KEY)
    os.environ.setdefault("LEA_LLM_TEMPERATURE", "0")  # same reply each run: comparable timings
    settings = Settings()
    server_env = {k: v for k, v in os.environ.items()}
    recording = browser_recording(args.clip)
    info = machine_info()
    print("lea-local bench")
    print(json.dumps(info, indent=2, ensure_ascii=False))
    shown = settings.model_dump(mode="json", exclude={"api_keys", "admin_api_key"})
    print("settings:", json.dumps(shown, ensure_ascii=False))

    direct_bench = DirectBench(settings)
    server = None
    if not args.no_http:
        data_dir = Path(tempfile.mkdtemp(prefix="lea-bench-"))
        server = ServerProcess(
            data_dir, {k: v for k, v in server_env.items() if k.startswith("LEA_")}, api_key=BENCH_KEY
        )
        server.start(timeout=600)
    notes = {
        "decode": "ffmpeg → 16 kHz float32",
        "asr_rtf": "ASR seconds per audio second",
        "llm_prompt_tps": "prompt evaluation, cold cache",
        "llm_voice_reply": "prompt + generation, voice turn",
        "tts": "Piper, whole reply",
        "tts_rtf": "TTS seconds per audio second",
        "tts_first_sentence": "first sentence's audio ready",
        "encode": settings.tts_format,
        "text_turn": "prompt + LLM",
        "voice_turn_to_text": "decode + ASR + LLM",
        "http_voice_json": "upload → JSON",
        "http_audio_first_byte": "after the JSON arrived",
        "http_audio_complete": "after the JSON arrived",
        "text_turn_http_over_direct": "paired per round",
        "voice_json_over_decode_asr_llm": "paired per round",
        "text_first_token": "same prompt again (evaluated state reused), first text",
        "text_turn_warm": "same prompt again, whole reply",
        "speech_first_phrase": "Piper, first phrase of the /v1/audio/speech text",
        "http_chat_completion": "/v1/chat/completions, same prompt",
        "http_agent_stream_first_delta": "/api/external/agent/chat/stream",
        "http_openai_stream_first_delta": "/v1/chat/completions stream",
        "http_speech_first_byte": "/v1/audio/speech, mp3",
        "chat_completion_http_over_direct": "target ≤ 1.03",
        "agent_first_delta_minus_first_token": "target ≤ 0.030 s",
        "openai_first_delta_minus_first_token": "target ≤ 0.030 s",
        "speech_first_byte_over_first_phrase": "target ≤ 1.2",
        **REALTIME_NOTES,
    }
    units = {"llm_prompt_tps": "tok/s", "llm_generation_tps": "tok/s", "asr_rtf": "×", "tts_rtf": "×"}
    units.update(
        text_turn_http_over_direct="×",
        voice_json_over_decode_asr_llm="×",
        chat_completion_http_over_direct="×",
        speech_first_byte_over_first_phrase="×",
    )
    direct: dict[str, Measure] = {}
    http: dict[str, Measure] = {}
    ratios: dict[str, Measure] = {}

    def record(table: dict[str, Measure], values: dict[str, object]) -> None:
        for name, value in values.items():
            if not name.startswith("_"):
                table.setdefault(name, Measure(name, units.get(name, "s"), note=notes.get(name, ""))).values.append(
                    value
                )

    try:
        client = httpx.Client(base_url=server.url, timeout=300) if server else None
        # Direct and HTTP rounds alternate, so that drift in the machine's speed hits both alike.
        for run in range(args.runs + 1):  # round 0 warms up
            turn = direct_bench.turn_round(recording)
            speech = direct_bench.speech_round(turn["_reply"].text)  # type: ignore[attr-defined]
            speech["speech_first_phrase"] = direct_bench.first_phrase_synthesis(SPEECH_TEXT)
            over_http = http_round(client, recording) if client else {}
            if client:
                system_prompt = direct_bench.services.turns.system_prompt.content
                messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": TEXT_MESSAGE}]
                over_http.update(http_stream_round(client, messages, SPEECH_TEXT))
                # Voice to voice over /v1/realtime: the clip streamed at the microphone's pace.
                over_http.update(realtime_round(server.url, BENCH_KEY, utterance_pcm(args.clip)))
                over_http.update(immoassist_round(server.url, BENCH_KEY, utterance_pcm(args.clip)))
            if run == 0:
                continue
            record(direct, {**turn, **speech})
            if over_http:
                record(http, over_http)
                record(
                    ratios,
                    {
                        "text_turn_http_over_direct": over_http["http_text_turn"] / turn["text_turn"],
                        "voice_json_over_decode_asr_llm": over_http["http_voice_json"] / turn["voice_turn_to_text"],
                        "chat_completion_http_over_direct": over_http["http_chat_completion"] / turn["text_turn_warm"],
                        "agent_first_delta_minus_first_token": over_http["http_agent_stream_first_delta"]
                        - turn["text_first_token"],
                        "openai_first_delta_minus_first_token": over_http["http_openai_stream_first_delta"]
                        - turn["text_first_token"],
                        "speech_first_byte_over_first_phrase": over_http["http_speech_first_byte"]
                        / speech["speech_first_phrase"],
                    },
                )
        if client:
            client.close()
    finally:
        if server:
            server.stop()
    facts = {
        "load_and_warm_up_s": round(direct_bench.load_and_warm_up_s, 2),
        "models": direct_bench.services.model_names(),
        "voice_transcription": turn["_transcript"],
        "voice_reply_tokens": turn["_reply"].completion_tokens,  # type: ignore[attr-defined]
        "audio_seconds": round(turn["_audio_seconds"], 2),  # type: ignore[arg-type]
    }
    direct_bench.close()
    engines = bench_asr_engines(settings, recording, args.runs, args.openai_checkpoint)
    print("facts:", json.dumps(facts, ensure_ascii=False))
    print_table("Direct engine calls", list(direct.values()))
    if engines:
        print_table("ASR engines on the same weights", list(engines.values()))
    if http:
        print_table("Over HTTP (real server on 127.0.0.1)", list(http.values()))
        print_table("Ratios", list(ratios.values()))
    report = {
        "machine": info,
        "settings": shown,
        "facts": facts,
        "runs": args.runs,
        "direct": {k: {"median": v.median, "unit": v.unit, "values": v.values} for k, v in direct.items()},
        "asr_engines": {k: {"median": v.median, "values": v.values, "model": v.note} for k, v in engines.items()},
        "http": {k: {"median": v.median, "unit": v.unit, "values": v.values} for k, v in http.items()},
        "ratios": {k: {"median": v.median, "values": v.values} for k, v in ratios.items()},
    }
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
