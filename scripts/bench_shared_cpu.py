#!/usr/bin/env python3
"""The engines beside a CPU-bound process (issue 25, item 11): an agency's CPU server also runs
its database, a second replica, backups. Measures, quiet and then beside one busy-looping process
(the "competitor"):

- llm: tokens/s of the tiny preset's model (in this process) with each fixed thread count from 1
  to the usable CPUs, and with the default (LEA_LLM_THREADS_ADAPTIVE: the most threads, fewer
  while other processes keep CPUs busy); the default's share of the best fixed count under
  contention (the issue's bar: at least half);
- asr: seconds of recognition per second of audio on two French clips (6 s, 23 s), per fixed thread count and
  the default, each in a child process (CTranslate2 reads its threading settings at load);
- turn: a real server with default settings answering a text turn of up to 256 tokens over HTTP
  beside the competitor, against its time budget (LEA_CHAT_TIMEOUT_SECONDS, 55 s).

Prints a table per part; run it alone on the machine (other work is contention too: the load
averages are printed).

usage: .venv/bin/python scripts/bench_shared_cpu.py [--runs 3] [--only llm asr turn]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LEA_PRESET", "tiny")
os.environ.setdefault("LEA_MODELS_DIR", str(REPO / "models"))

from lea_local.runtime.cpu_share import shared_cpu_share, usable_cpus  # noqa: E402
from lea_local.runtime.hardware import physical_cores  # noqa: E402

CLIPS = [REPO.parent / "shared" / "audio" / "fr" / name for name in ("fleurs_fr_000.ogg", "fleurs_fr_001.ogg")]
"""A short turn (about 6 s) and a long one (23 s)."""
PROMPT = "Écris une longue lettre à un client qui achète sa première maison à Laval."
TOKENS = 128


def _spin() -> None:
    while True:
        pass


@contextmanager
def competitor(active: bool) -> Iterator[None]:
    """One CPU-bound process beside us while the block runs (none when not `active`)."""
    if not active:
        yield
        return
    process = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    process.start()
    time.sleep(2)  # started, and seen by the sampler (every 0.5 s)
    try:
        yield
    finally:
        process.kill()
        process.join()
        time.sleep(1)


def bench_llm(runs: int) -> list[dict]:
    from lea_local.llm.base import ChatMessage
    from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine
    from lea_local.services import resolve_model_paths
    from lea_local.settings import Settings

    path = resolve_model_paths(Settings()).llm
    most = physical_cores()
    configs = [(f"{n} thread(s), fixed", n, False) for n in range(1, usable_cpus() + 1)]
    configs.append((f"default: adaptive, at most {most}", most, True))
    messages = [ChatMessage("user", PROMPT)]
    rows = []
    for label, threads, adaptive in configs:
        engine = LlamaCppChatEngine(
            path, context_size=1024, threads=threads, cpu_share=shared_cpu_share() if adaptive else None
        )
        engine.generate(messages, max_tokens=8, temperature=0.0)  # warm
        for contended in (False, True):
            speeds = []
            with competitor(contended):
                for run in range(runs):
                    engine.reset_cache()
                    started = time.perf_counter()
                    reply = engine.generate(messages, max_tokens=TOKENS, temperature=0.7, seed=run)
                    speeds.append(reply.completion_tokens / (time.perf_counter() - started))
            rows.append(
                {"config": label, "contended": contended, "tok_s": statistics.median(speeds), "adaptive": adaptive}
            )
            print(f"  llm {label:<32} {'contended' if contended else 'quiet':<10} {rows[-1]['tok_s']:6.1f} tok/s")
        del engine
    return rows


def asr_child(threads: int) -> None:
    """In a child: seconds of recognition per audio second on each clip, median of the runs given."""
    from lea_local.asr.decode import decode_audio
    from lea_local.services import build_recognizer, resolve_model_paths
    from lea_local.settings import Settings

    settings = Settings(asr_threads=threads)
    recognizer = build_recognizer(settings, resolve_model_paths(settings).asr)
    found = {}
    for clip in CLIPS:
        audio = decode_audio(clip.read_bytes(), max_seconds=120, timeout=60).samples
        seconds = len(audio) / 16_000
        recognizer.transcribe(audio)  # warm
        ratios = []
        for _ in range(int(os.environ["BENCH_RUNS"])):
            started = time.perf_counter()
            recognizer.transcribe(audio)
            ratios.append((time.perf_counter() - started) / seconds)
        found[f"{seconds:.0f} s"] = statistics.median(ratios)
    print(json.dumps(found))


def bench_asr(runs: int) -> list[dict]:
    rows = []
    configs = [(f"{n} thread(s)", n) for n in range(1, usable_cpus() + 1)] + [("default (physical cores)", 0)]
    for label, threads in configs:
        for contended in (False, True):
            with competitor(contended):
                done = subprocess.run(
                    [sys.executable, __file__, "--asr-child", str(threads)],
                    env={**os.environ, "BENCH_RUNS": str(runs)},
                    capture_output=True,
                    text=True,
                    check=True,
                )
            ratios = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"config": label, "contended": contended, "ratios": ratios})
            shown = ", ".join(f"{ratio:.3f} ({clip})" for clip, ratio in ratios.items())
            print(f"  asr {label:<32} {'contended' if contended else 'quiet':<10} s per audio s: {shown}")
    return rows


def bench_turn(runs: int) -> list[dict]:
    import httpx

    from lea_local.tools.server_process import ServerProcess

    key = "bench-shared-cpu-2f8a1c9e"
    rows = []

    def turn(client: httpx.Client, contended: bool, run: int) -> dict:
        started = time.perf_counter()
        answer = client.post(
            "/api/external/agent/chat",
            json={"message": PROMPT, "session_id": f"bench-{contended}-{run}"},
            headers={"X-API-Key": key},
        )
        seconds = time.perf_counter() - started
        print(f"  turn {'contended' if contended else 'quiet':<10} {answer.status_code} {seconds:6.1f} s")
        reply = answer.json().get("response", "") if answer.is_success else ""
        return {"contended": contended, "status": answer.status_code, "seconds": seconds, "reply_chars": len(reply)}

    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEA_LLM_THREADS")}
        env["LEA_LLM_MAX_REPLY_TOKENS"] = "256"
        server = ServerProcess(Path(data), env, api_key=key, cwd=REPO).start(300)
        try:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                for contended in (False, True):
                    with competitor(contended):
                        rows += [turn(client, contended, run) for run in range(runs)]
        finally:
            server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=["llm", "asr", "turn"], default=["llm", "asr", "turn"])
    parser.add_argument("--asr-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.asr_child is not None:
        asr_child(args.asr_child)
        return 0
    print(f"usable CPUs {usable_cpus()}, physical cores {physical_cores()}, load {os.getloadavg()}")
    ok = True
    if "llm" in args.only:
        rows = bench_llm(args.runs)
        contended = [r for r in rows if r["contended"]]
        best = max(r["tok_s"] for r in contended if not r["adaptive"])
        default = next(r["tok_s"] for r in contended if r["adaptive"])
        print(
            f"llm under contention: default {default:.1f} tok/s = {default / best:.0%} of the best fixed ({best:.1f})"
        )
        ok &= default >= best / 2
    if "asr" in args.only:
        bench_asr(args.runs)
    if "turn" in args.only:
        rows = bench_turn(args.runs)
        worst = max(r["seconds"] for r in rows if r["contended"])
        print(f"turn under contention: worst {worst:.1f} s of a 55 s budget; statuses {[r['status'] for r in rows]}")
        ok &= all(r["status"] == 200 for r in rows)
    print(f"load after: {os.getloadavg()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
