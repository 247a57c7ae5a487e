#!/usr/bin/env python3
"""Load test on 127.0.0.1: mixed text and voice turns, many sessions, bounded concurrency.

Starts its own server (tiny preset unless LEA_PRESET says otherwise) with a fresh data directory,
sends --turns turns over --sessions sessions with --concurrency in flight (a session's next turn
leaves only when its previous one has answered, so that each conversation has a well-defined
order), then checks the database: every turn that got 200 is stored exactly once, in the order
it was answered, and nothing else is. Prints throughput and p50/p95 latencies, writes JSON.

usage: scripts/load_test.py [--turns 200] [--concurrency 8] [--sessions 20] [--voice-share 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.server import API_KEY, CHAT_PATH, VOICE_PATH, LeaServer  # noqa: E402

CLIPS = sorted((REPO / "tests" / "fixtures" / "audio" / "fr").glob("picovoice_*.wav"))
QUESTIONS = [
    "Quels diagnostics pour vendre une maison ?",
    "Comment estimer un appartement à Lyon ?",
    "Que doit contenir un mandat exclusif ?",
    "Quel est le délai entre compromis et acte ?",
    "Comment préparer une visite ?",
]


def webm(path: Path) -> bytes:
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-c:a", "libopus", "-f", "webm", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> dict:
    recordings = [webm(p) for p in CLIPS]
    rng = random.Random(args.seed)
    plan: dict[int, list[tuple[str, int]]] = defaultdict(list)  # session → [(kind, index)]
    for i in range(args.turns):
        kind = "voice" if rng.random() < args.voice_share else "text"
        plan[i % args.sessions].append((kind, i))

    data_dir = Path(tempfile.mkdtemp(prefix="lea-load-"))
    models = Path(args.models_dir).resolve()
    env = {"LEA_LLM_MAX_REPLY_TOKENS": str(args.max_tokens), "LEA_PRESET": args.preset}
    server = LeaServer(data_dir, models, env)
    server.start()
    results: list[dict] = []
    session_ids: dict[int, str] = {}
    gate = asyncio.Semaphore(args.concurrency)
    started = time.monotonic()

    async def drive(session: int, client: httpx.AsyncClient) -> None:
        for kind, index in plan[session]:
            form = {"session_id": session_ids[session]} if session in session_ids else {}
            async with gate:
                sent = time.monotonic()
                try:
                    if kind == "text":
                        message = f"[{index}] {QUESTIONS[index % len(QUESTIONS)]}"
                        r = await client.post(
                            CHAT_PATH, json={"message": message, **form}, headers={"X-API-Key": API_KEY}
                        )
                    else:
                        audio = recordings[index % len(recordings)]
                        r = await client.post(
                            VOICE_PATH,
                            files={"audio": ("r.webm", audio, "audio/webm")},
                            data=form,
                            headers={"X-API-Key": API_KEY},
                        )
                    status, body = (
                        r.status_code,
                        (r.json() if r.headers.get("content-type", "").startswith("application/json") else {}),
                    )
                except httpx.HTTPError as exc:
                    status, body = 0, {"error": repr(exc)}
                latency = time.monotonic() - sent
            if status == 200:
                session_ids.setdefault(session, body["session_id"])
            results.append(
                {
                    "session": session,
                    "kind": kind,
                    "index": index,
                    "status": status,
                    "latency": latency,
                    "answered_at": time.monotonic(),
                    "session_id": body.get("session_id"),
                    "conversation_id": body.get("conversation_id"),
                    "user_text": body.get("transcription")
                    if kind == "voice"
                    else (message if kind == "text" else None),
                    "response": body.get("response"),
                }
            )

    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=args.timeout) as client:
            await asyncio.wait_for(asyncio.gather(*(drive(s, client) for s in plan)), timeout=args.time_limit)
        elapsed = time.monotonic() - started
    finally:
        server.stop()

    # --- what the database holds ---------------------------------------------------------------
    with sqlite3.connect(data_dir / "lea.sqlite3") as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT conversation_id, role, content FROM messages ORDER BY id").fetchall()
    stored: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for conversation_id, role, content in rows:
        stored[conversation_id].append((role, content))
    expected: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for r in sorted((r for r in results if r["status"] == 200), key=lambda r: r["answered_at"]):
        expected[r["conversation_id"]] += [("user", r["user_text"]), ("assistant", r["response"])]
    problems = [
        f"conversation {cid}: stored turns differ from answered turns"
        for cid in set(stored) | set(expected)
        if stored.get(cid) != expected.get(cid)
    ]
    if check != "ok":
        problems.append(f"integrity_check: {check}")

    ok = [r for r in results if r["status"] == 200]
    statuses: dict[str, int] = defaultdict(int)
    for r in results:
        statuses[str(r["status"])] += 1
    summary = {
        "turns": len(results),
        "planned": args.turns,
        "concurrency": args.concurrency,
        "sessions": args.sessions,
        "statuses": dict(statuses),
        "server_errors": sum(1 for r in results if r["status"] >= 500 and r["status"] != 503 or r["status"] == 0),
        "elapsed_s": round(elapsed, 2),
        "throughput_turns_per_s": round(len(ok) / elapsed, 3),
        "latency_s": {
            kind: {
                "p50": round(percentile([r["latency"] for r in ok if r["kind"] == kind], 0.5), 3),
                "p95": round(percentile([r["latency"] for r in ok if r["kind"] == kind], 0.95), 3),
                "n": sum(1 for r in ok if r["kind"] == kind),
            }
            for kind in ("text", "voice")
        },
        "stored_messages": len(rows),
        "problems": problems,
        "data_dir": str(data_dir),
    }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--voice-share", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=24, help="LLM reply length (keeps the run bounded)")
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds before the run is abandoned")
    parser.add_argument("--timeout", type=float, default=600, help="per-request client timeout")
    parser.add_argument("--models-dir", default=str(REPO / "models"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0 if not summary["problems"] and summary["server_errors"] == 0 and summary["turns"] == args.turns else 1


if __name__ == "__main__":
    sys.exit(main())
