#!/usr/bin/env python3
"""Throughput of a replica whose LLM runs in its own process (llama-cpp-python) against one whose
LLM is a remote engine, at several concurrencies; and the remote path's HTTP overhead.

For each engine it starts, on 127.0.0.1:
- in-process: one lea-local replica with the GGUF loaded in it (one generation at a time);
- remote: the engine server, then one lea-local replica whose LLM_URL is that server:
  llama.cpp's `llama-server` with --slots parallel slots (continuous batching) when
  --llama-server names its binary, else llama-cpp-python's `python -m llama_cpp.server` (one at a
  time). The replica sends up to --slots generations at once (LEA_LLM_PARALLEL).

Then, per concurrency (--concurrency 1 4 8), it runs --turns text turns over sessions of a few
turns each (scripts/load_test.py's clients: a session's next turn once its previous one is
answered, every turn needed a 200), and measures turns per second and the p50/p95 of a turn.

HTTP overhead of the remote path, at concurrency 1: the time the replica spent in its LLM stage
(its request log's `llm`: prompt counting over HTTP, the streamed generation) less the engine's
own time for the same generations (llama.cpp's `total time` lines in the engine's log), as a
share of the turn the client saw. Target: at most 5 %.

Prints a Markdown table (and writes the figures with --json). Run it on a quiet machine: every
process here shares the CPU.

usage: .venv/bin/python scripts/bench_scaling.py [--turns 24] [--concurrency 1 4 8] [--max-tokens 64]
          [--threads 2] [--slots 8] [--llama-server path/to/llama-server] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lea_local.tools.server_process import free_port  # noqa: E402
from scripts.load_test import Attempt, LoadPlan, percentile, run_sessions  # noqa: E402
from tests.server import LeaServer  # noqa: E402

DEFAULT_MODEL = REPO / "models" / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SLOT_CONTEXT = 2048
TURNS_PER_SESSION = 3
# llama.cpp prints this when a generation ends (llama-server's slot timings, llama_perf_context_print).
ENGINE_TOTAL = re.compile(r"total time\s*=\s*([\d.]+) ms")


@dataclass
class Level:
    engine: str
    concurrency: int
    turns: int
    seconds: float
    p50: float
    p95: float
    attempts: list[Attempt]

    @property
    def turns_per_second(self) -> float:
        return self.turns / self.seconds


class EngineServer:
    """The remote LLM engine on 127.0.0.1, its log in `log_path`."""

    def __init__(self, model: Path, threads: int, slots: int, llama_server: Path | None, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        if llama_server is not None:
            self.name = f"llama-server, {slots} slots"
            command = [
                str(llama_server), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
                "-c", str(SLOT_CONTEXT * slots), "-np", str(slots), "-t", str(threads),
            ]  # fmt: skip
        else:
            self.name = "llama_cpp.server (one at a time)"
            command = [
                sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", str(SLOT_CONTEXT), "--n_threads", str(threads),
            ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
        for _ in range(1200):
            if self.process.poll() is not None:
                raise SystemExit(f"the engine server exited: see {log_path}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"the engine server did not start: see {log_path}")

    def generation_seconds(self) -> list[float]:
        """Each finished generation's own time, in the order the engine logged them."""
        text = self.log_path.read_text(errors="replace")
        return [float(ms) / 1000 for ms in ENGINE_TOTAL.findall(text)]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_level(replica: LeaServer, engine: str, concurrency: int, turns: int) -> Level:
    plan = LoadPlan(
        sessions=max(concurrency, -(-turns // TURNS_PER_SESSION)),
        concurrency=concurrency,
        turns=turns,
        voice_share=0.0,
        client_timeout={"text": 600.0, "voice": 600.0},
    )

    async def main() -> list[Attempt]:
        async with httpx.AsyncClient(base_url=replica.url, limits=httpx.Limits(max_connections=64)) as client:
            return await run_sessions(client, plan, [])

    started = time.monotonic()
    attempts = asyncio.run(main())
    seconds = time.monotonic() - started
    failed = [a for a in attempts if a.status != 200]
    if failed:
        raise SystemExit(f"{engine}, concurrency {concurrency}: {len(failed)} turns failed: {failed[0].body}")
    latencies = [a.latency for a in attempts]
    return Level(engine, concurrency, len(attempts), seconds, percentile(latencies, 0.5), percentile(latencies, 0.95),
                 attempts)  # fmt: skip


def http_overhead(replica: LeaServer, attempts: list[Attempt], engine_seconds: list[float]) -> dict:
    """At concurrency 1, per turn: the replica's LLM stage (its request log line) less the
    engine's own time for that turn's generation (the engine logs them in the order they end,
    one per turn), as a share of the turn the client saw. Medians over the turns."""
    stage = {
        event["request_id"]: event["stages"]["llm"]
        for event in replica.log_events()
        if event.get("event") == "request" and "llm" in event.get("stages", {})
    }
    turns = sorted(attempts, key=lambda a: a.sent_at)
    if len(engine_seconds) != len(turns):
        raise SystemExit(f"{len(engine_seconds)} generations logged by the engine for {len(turns)} turns")
    per_turn = [(a.latency, stage[a.request_id], engine) for a, engine in zip(turns, engine_seconds, strict=True)]
    return {
        "turn_s": statistics.median(turn for turn, _, _ in per_turn),
        "replica_llm_stage_s": statistics.median(llm for _, llm, _ in per_turn),
        "engine_generation_s": statistics.median(engine for _, _, engine in per_turn),
        "http_overhead_s": statistics.median(llm - engine for _, llm, engine in per_turn),
        "share_of_turn": statistics.median((llm - engine) / turn for turn, llm, engine in per_turn),
        "generations_counted": len(per_turn),
        "per_turn": per_turn,
    }


def bench(args: argparse.Namespace) -> dict:
    results: list[Level] = []
    overhead: dict = {}
    base_env = {
        "LEA_LLM_MAX_REPLY_TOKENS": str(args.max_tokens),
        "LEA_LLM_THREADS": str(args.threads),
        "LEA_LLM_CONTEXT_SIZE": str(SLOT_CONTEXT),
        "LEA_LLM_QUEUE_SIZE": "64",
        "LEA_REQUEST_TIMEOUT_SECONDS": "600",
    }
    with tempfile.TemporaryDirectory(prefix="lea-bench-scaling-") as tmp:
        work = Path(tmp)
        # In-process: the GGUF loaded in the replica.
        in_process_env = {**base_env, "LEA_LLM_MODEL": str(args.model)}
        replica = LeaServer(work / "in-process", args.models_dir, in_process_env).start()
        try:
            run_level(replica, "warm-up", 1, 2)
            for concurrency in args.concurrency:
                results.append(run_level(replica, "in-process (llama-cpp-python)", concurrency, args.turns))
        finally:
            replica.stop()

        engine = EngineServer(args.model, args.threads, args.slots, args.llama_server, work / "engine.log")
        try:
            parallel = args.slots if args.llama_server else 1
            remote_env = {**base_env, "LEA_LLM_URL": f"{engine.url}/v1", "LEA_LLM_PARALLEL": str(parallel)}
            replica = LeaServer(work / "remote", args.models_dir, remote_env).start()
            try:
                run_level(replica, "warm-up", 1, 2)
                for concurrency in args.concurrency:
                    generations_before = len(engine.generation_seconds())
                    level = run_level(replica, f"remote: {engine.name}", concurrency, args.turns)
                    results.append(level)
                    if concurrency == 1:
                        engine_seconds = engine.generation_seconds()[generations_before:]
                        overhead = http_overhead(replica, level.attempts, engine_seconds)
            finally:
                replica.stop()
        finally:
            engine.stop()
    return {"levels": results, "overhead": overhead}


def markdown(levels: list[Level], overhead: dict, args: argparse.Namespace) -> str:
    lines = [
        f"{args.turns} text turns per level, replies ≤ {args.max_tokens} tokens, {args.threads} threads, "
        f"{args.model.name}",
        "",
        "| LLM | concurrency | turns/s | p50 (s) | p95 (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {lv.engine} | {lv.concurrency} | {lv.turns_per_second:.2f} | {lv.p50:.2f} | {lv.p95:.2f} |" for lv in levels
    ]
    if overhead:
        lines += [
            "",
            f"Remote path at concurrency 1: turn {overhead['turn_s']:.3f} s, replica's LLM stage "
            f"{overhead['replica_llm_stage_s']:.3f} s, engine's own generation {overhead['engine_generation_s']:.3f} s "
            f"({overhead['generations_counted']} generations): HTTP overhead "
            f"{overhead['http_overhead_s'] * 1000:.0f} ms = {overhead['share_of_turn'] * 100:.1f} % of the turn "
            "(target ≤ 5 %).",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=24, help="text turns per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=64, help="LEA_LLM_MAX_REPLY_TOKENS")
    parser.add_argument("--threads", type=int, default=2, help="LLM threads, in-process and in the engine")
    parser.add_argument("--slots", type=int, default=8, help="llama-server's parallel slots")
    parser.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server binary (else llama_cpp.server)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models", help="the replicas' speech models")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    args.model = args.model.resolve()
    args.models_dir = args.models_dir.resolve()
    result = bench(args)
    print(markdown(result["levels"], result["overhead"], args))
    if args.json:
        levels = [
            {k: v for k, v in vars(level).items() if k != "attempts"} | {"turns_per_second": level.turns_per_second}
            for level in result["levels"]
        ]
        args.json.write_text(json.dumps({"levels": levels, "overhead": result["overhead"]}, indent=2))
    share = result["overhead"].get("share_of_turn")
    return 0 if share is None or share <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
