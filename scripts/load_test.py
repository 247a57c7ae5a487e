#!/usr/bin/env python3
"""Load test on 127.0.0.1, as ImmoAssist's users make it: mixed text and voice turns, many
sessions, --concurrency clients, for --duration seconds (or --turns turns).

Starts its own server (tiny preset unless --preset says otherwise) with a fresh data directory.
Each client owns some sessions and sends one turn at a time with ImmoAssist's timeouts (60 s
text, 90 s voice); after a 503 it waits a moment, as a user who retries would. At the end it
checks:
- every answer is a 200 within the turn's budget, or a 503 (refused at once: p99 printed);
- no answer arrived after the client's timeout (none was cut off by it);
- the database holds every turn that got 200 exactly once, in the order it was answered, and
  nothing else.
Prints the figures as JSON (and writes them with --json); exits non-zero on any problem.

usage: scripts/load_test.py [--concurrency 24] [--duration 120] [--sessions 48] [--voice-share 0.5]
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
    "Quels formulaires faut-il pour une promesse d'achat ?",
    "Comment calculer la taxe de bienvenue à Montréal ?",
    "Que doit contenir la déclaration du vendeur ?",
    "Quel délai pour l'inspection préachat ?",
    "Comment préparer une visite libre ?",
]
# ImmoAssist's read timeouts, and the server's default budgets inside them.
CLIENT_TIMEOUT = {"text": 60.0, "voice": 90.0}
BUDGET = {"text": 55.0, "voice": 85.0}


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
    sessions = max(args.sessions, args.concurrency)
    data_dir = Path(tempfile.mkdtemp(prefix="lea-load-"))
    env = {"LEA_LLM_MAX_REPLY_TOKENS": str(args.max_tokens), "LEA_PRESET": args.preset}
    server = LeaServer(data_dir, Path(args.models_dir).resolve(), env)
    server.start()
    results: list[dict] = []
    session_ids: dict[int, str] = {}
    sent_turns = 0
    started = time.monotonic()
    stop_at = started + args.duration

    def more() -> bool:
        return time.monotonic() < stop_at and (args.turns is None or sent_turns < args.turns)

    async def client_loop(worker: int, client: httpx.AsyncClient) -> None:
        nonlocal sent_turns
        mine = [s for s in range(sessions) if s % args.concurrency == worker]
        turn = 0
        while more():
            session = mine[turn % len(mine)]
            turn += 1
            sent_turns += 1
            index = sent_turns
            kind = "voice" if rng.random() < args.voice_share else "text"
            form = {"session_id": session_ids[session]} if session in session_ids else {}
            message = f"[{index}] {QUESTIONS[index % len(QUESTIONS)]}"
            sent = time.monotonic()
            try:
                if kind == "text":
                    r = await client.post(
                        CHAT_PATH,
                        json={"message": message, **form},
                        headers={"X-API-Key": API_KEY},
                        timeout=CLIENT_TIMEOUT["text"],
                    )
                else:
                    r = await client.post(
                        VOICE_PATH,
                        files={"audio": ("recording.webm", recordings[index % len(recordings)], "audio/webm")},
                        data={**form, "user_id": str(worker), "user_email": ""},
                        headers={"X-API-Key": API_KEY},
                        timeout=CLIENT_TIMEOUT["voice"],
                    )
                status = r.status_code
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            except httpx.TimeoutException:
                status, body = -1, {}  # the client gave up, as ImmoAssist would
            except httpx.HTTPError as exc:
                status, body = 0, {"error": repr(exc)}
            latency = time.monotonic() - sent
            if status == 200:
                session_ids.setdefault(session, body["session_id"])
            results.append(
                {
                    "kind": kind,
                    "status": status,
                    "latency": latency,
                    "answered_at": time.monotonic(),
                    "conversation_id": body.get("conversation_id"),
                    "user_text": body.get("transcription") if kind == "voice" else message,
                    "response": body.get("response"),
                }
            )
            if status == 503:
                await asyncio.sleep(args.retry_pause)

    try:
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=100)) as client:
            await asyncio.wait_for(
                asyncio.gather(*(client_loop(w, client) for w in range(args.concurrency))),
                timeout=args.duration + max(CLIENT_TIMEOUT.values()) + 30,
            )
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
    for r in results:
        if r["status"] == 200 and r["latency"] > BUDGET[r["kind"]] + 1.0:
            problems.append(f"a {r['kind']} 200 took {r['latency']:.1f} s, over its {BUDGET[r['kind']]:g} s budget")
        elif r["status"] not in (200, 503):
            problems.append(f"a {r['kind']} turn answered {r['status']} after {r['latency']:.1f} s")

    ok = [r for r in results if r["status"] == 200]
    refused = [r["latency"] for r in results if r["status"] == 503]
    statuses: dict[str, int] = defaultdict(int)
    for r in results:
        statuses[str(r["status"])] += 1
    return {
        "turns": len(results),
        "concurrency": args.concurrency,
        "sessions": sessions,
        "duration_s": args.duration,
        "max_reply_tokens": args.max_tokens,
        "statuses": dict(statuses),
        "elapsed_s": round(elapsed, 2),
        "throughput_turns_per_s": round(len(ok) / elapsed, 3),
        "latency_s": {
            kind: {
                "p50": round(percentile([r["latency"] for r in ok if r["kind"] == kind], 0.5), 3),
                "p95": round(percentile([r["latency"] for r in ok if r["kind"] == kind], 0.95), 3),
                "max": round(max([r["latency"] for r in ok if r["kind"] == kind], default=float("nan")), 3),
                "n": sum(1 for r in ok if r["kind"] == kind),
            }
            for kind in ("text", "voice")
        },
        "refused_503": {
            "n": len(refused),
            "p50_ms": round(1000 * percentile(refused, 0.5), 1),
            "p99_ms": round(1000 * percentile(refused, 0.99), 1),
        },
        "answers_after_client_timeout": statuses.get("-1", 0),
        "stored_messages": len(rows),
        "problems": problems,
        "data_dir": str(data_dir),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds during which turns are sent")
    parser.add_argument("--turns", type=int, help="stop after this many turns (default: only the duration)")
    parser.add_argument("--sessions", type=int, default=48)
    parser.add_argument("--voice-share", type=float, default=0.5)
    parser.add_argument("--max-tokens", type=int, default=256, help="LLM reply length (the server's default)")
    parser.add_argument("--retry-pause", type=float, default=1.0, help="seconds a client waits after a 503")
    parser.add_argument("--models-dir", default=str(REPO / "models"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()
    summary = asyncio.run(run(args))
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return 0 if not summary["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
