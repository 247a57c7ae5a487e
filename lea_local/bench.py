"""`lea-local bench`: per-stage latencies of a turn, by direct engine calls and over HTTP.

Direct: decode (ffmpeg), ASR (with its real-time factor), LLM (prompt and generation tokens per
second), TTS (real-time factor), audio encoding, and the text and voice turns as the sum of
their engine calls. HTTP: the same text and voice turns against a real server started on
127.0.0.1 with the same settings, the time to the first byte of the reply's audio, and the
ratio HTTP/direct. Both ASR engines are compared on the same weights when both are available.
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

from lea_local.asr.decode import decode_audio
from lea_local.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = REPO / "tests" / "fixtures" / "audio" / "fr" / "picovoice_cheetah_test_fr_v2.2.wav"
TEXT_MESSAGE = "Quels documents faut-il réunir pour mettre en vente un appartement ?"
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


def bench_direct(settings: Settings, recording: bytes, runs: int) -> tuple[dict[str, Measure], dict[str, object]]:
    from lea_local.services import build_services
    from lea_local.store.conversations import ConversationContext
    from lea_local.tts.encode import encode_audio
    from lea_local.tts.normalize_fr import normalize_for_speech

    load_started = time.perf_counter()
    services = build_services(settings)
    services.warm_up()
    facts: dict[str, object] = {
        "load_and_warm_up_s": round(time.perf_counter() - load_started, 2),
        "models": services.model_names(),
    }
    assert services.voice is not None and services.speech is not None and services.recognizer is not None
    voice, engine, synthesizer = services.voice, services.chat_engine, services.speech.synthesizer
    m = {
        name: Measure(name, unit, note=note)
        for name, unit, note in [
            ("decode", "s", "ffmpeg → 16 kHz float32"),
            ("asr", "s", ""),
            ("asr_rtf", "×", "ASR seconds per audio second"),
            ("llm_prompt_tps", "tok/s", "prompt evaluation, cold cache"),
            ("llm_generation_tps", "tok/s", ""),
            ("llm_voice_reply", "s", "prompt + generation for the voice turn"),
            ("tts", "s", "Piper, whole reply"),
            ("tts_rtf", "×", "TTS seconds per audio second"),
            ("tts_first_sentence", "s", "first sentence's audio ready"),
            ("encode", "s", f"{settings.tts_format}"),
            ("text_turn", "s", "prompt + LLM"),
            ("voice_turn_to_text", "s", "decode + ASR + LLM"),
            ("voice_turn_with_audio", "s", "decode + ASR + LLM + TTS + encode"),
        ]
    }
    empty = ConversationContext("bench", None, ())

    def generate(message: str) -> tuple[float, float, object]:
        prompt = services.turns.build_prompt(empty, message)
        first: list[float] = []
        started = time.perf_counter()
        reply = engine.generate(
            prompt,
            max_tokens=settings.llm_max_reply_tokens,
            temperature=settings.llm_temperature,
            on_text=lambda _: first or first.append(time.perf_counter()),
        )
        ended = time.perf_counter()
        return (first[0] if first else ended) - started, ended - started, reply

    for run in range(runs + 1):  # run 0 is the warm-up
        keep = run > 0
        t_decode, decoded = timed(lambda: voice._decode(recording))
        t_asr, transcript = timed(lambda d=decoded: voice._transcribe(d))
        _, t_llm, reply = generate(transcript.text)
        spoken = normalize_for_speech(reply.text)
        chunks: list = []
        first_chunk: list[float] = []
        started = time.perf_counter()
        for chunk in synthesizer.synthesize(spoken):
            chunks.append(chunk)
            first_chunk or first_chunk.append(time.perf_counter() - started)
        t_tts = time.perf_counter() - started
        import numpy as np

        samples = np.concatenate(chunks)
        t_encode, _ = timed(lambda x=samples: encode_audio(x, synthesizer.sample_rate, settings.tts_format))
        # Cold prompt: forget the KV cache so the whole prompt is evaluated.
        reset = getattr(engine, "reset_cache", None)
        if reset:
            reset()
        ttft, total, text_reply = generate(TEXT_MESSAGE)
        if keep:
            m["decode"].values.append(t_decode)
            m["asr"].values.append(t_asr)
            m["asr_rtf"].values.append(t_asr / decoded.seconds)
            m["llm_voice_reply"].values.append(t_llm)
            m["tts"].values.append(t_tts)
            m["tts_rtf"].values.append(t_tts / (len(samples) / synthesizer.sample_rate))
            m["tts_first_sentence"].values.append(first_chunk[0])
            m["encode"].values.append(t_encode)
            m["llm_prompt_tps"].values.append(text_reply.prompt_tokens / ttft)
            if text_reply.completion_tokens > 1 and total > ttft:
                m["llm_generation_tps"].values.append((text_reply.completion_tokens - 1) / (total - ttft))
            m["voice_turn_to_text"].values.append(t_decode + t_asr + t_llm)
            m["voice_turn_with_audio"].values.append(t_decode + t_asr + t_llm + t_tts + t_encode)
        # The text turn as the server runs it: warm prefix cache, like the HTTP runs.
        t_text, _ = timed(lambda: generate(TEXT_MESSAGE))
        if keep:
            m["text_turn"].values.append(t_text)
    facts["voice_transcription"] = transcript.text
    facts["voice_reply_tokens"] = reply.completion_tokens
    facts["text_reply_tokens"] = text_reply.completion_tokens
    facts["audio_seconds"] = round(decoded.seconds, 2)
    services.close()
    return m, facts


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


class ServerProcess:
    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (data_dir / "bench-server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lea_local", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**env, "AGENT_API_KEY": BENCH_KEY, "LEA_DATA_DIR": str(data_dir)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited; see bench-server.log")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def bench_http(settings_env: dict[str, str], recording: bytes, runs: int) -> dict[str, Measure]:
    m = {
        "http_text_turn": Measure("http_text_turn"),
        "http_voice_json": Measure("http_voice_json", note="upload → JSON"),
        "http_audio_first_byte": Measure("http_audio_first_byte", note="after the JSON arrived"),
        "http_audio_complete": Measure("http_audio_complete", note="after the JSON arrived"),
    }
    with tempfile.TemporaryDirectory(prefix="lea-bench-") as data_dir:
        server = ServerProcess(settings_env, Path(data_dir))
        try:
            headers = {"X-API-Key": BENCH_KEY}
            with httpx.Client(base_url=server.url, timeout=300) as client:
                for run in range(runs + 1):
                    started = time.perf_counter()
                    r = client.post(
                        "/api/external/agent/chat/voice",
                        files={"audio": ("r.webm", recording, "audio/webm")},
                        headers=headers,
                    )
                    json_at = time.perf_counter()
                    r.raise_for_status()
                    url = r.json()["assistant_audio_url"]
                    first_byte = complete = float("nan")
                    if url:
                        with client.stream("GET", url) as audio:
                            for _ in audio.iter_raw():
                                if first_byte != first_byte:  # nan: first chunk
                                    first_byte = time.perf_counter() - json_at
                            complete = time.perf_counter() - json_at
                    t_text, text = timed(
                        lambda: client.post("/api/external/agent/chat", json={"message": TEXT_MESSAGE}, headers=headers)
                    )
                    text.raise_for_status()  # type: ignore[attr-defined]
                    if run:
                        m["http_voice_json"].values.append(json_at - started)
                        m["http_audio_first_byte"].values.append(first_byte)
                        m["http_audio_complete"].values.append(complete)
                        m["http_text_turn"].values.append(t_text)
        finally:
            server.stop()
    return m


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
    shown = settings.model_dump(mode="json", exclude={"api_keys"})
    print("settings:", json.dumps(shown, ensure_ascii=False))

    direct, facts = bench_direct(settings, recording, args.runs)
    print("facts:", json.dumps(facts, ensure_ascii=False))
    print_table("Direct engine calls", list(direct.values()))
    engines = bench_asr_engines(settings, recording, args.runs, args.openai_checkpoint)
    if engines:
        print_table("ASR engines on the same weights", list(engines.values()))
    http: dict[str, Measure] = {}
    ratios: dict[str, float] = {}
    if not args.no_http:
        http = bench_http(server_env, recording, args.runs)
        print_table("Over HTTP (real server on 127.0.0.1)", list(http.values()))
        ratios = {
            "text_turn_http_over_direct": http["http_text_turn"].median / direct["text_turn"].median,
            "voice_json_over_decode_asr_llm": http["http_voice_json"].median / direct["voice_turn_to_text"].median,
        }
        print("\nRatios")
        for name, value in ratios.items():
            print(f"  {name:<34} {value:.3f}")
    report = {
        "machine": info,
        "settings": shown,
        "facts": facts,
        "runs": args.runs,
        "direct": {k: {"median": v.median, "unit": v.unit, "values": v.values} for k, v in direct.items()},
        "asr_engines": {k: {"median": v.median, "values": v.values, "model": v.note} for k, v in engines.items()},
        "http": {k: {"median": v.median, "unit": v.unit, "values": v.values} for k, v in http.items()},
        "ratios": ratios,
    }
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
