#!/usr/bin/env python3
"""Load test, as ImmoAssist's users make it: mixed text and voice turns over many sessions,
--concurrency clients, for --duration seconds or --turns turns.

Each session is a conversation with a session id of the client's; a session's next turn is sent
once its previous one is answered (one broker, one conversation), and the clients take whichever
session is free, so that one session's turns come through different connections (and, behind
a load balancer, different replicas). Every turn carries an X-Request-ID of its own, which the
server logs. A voice turn's reply audio is fetched at once, as the broker's browser does.
ImmoAssist's timeouts (60 s text, 90 s voice). After a 503 a client waits a moment, then sends
the next turn, or the same turn again with --retry-refused.

Without --url it starts its own server (tiny preset unless --preset says otherwise) with a fresh
data directory; with --url it drives a running deployment (e.g. nginx in front of replicas,
--ca for its certificate) and reads the turns back from --database-url.

At the end it checks:
- every answer is a 200 within the turn's budget, or a 503;
- no answer arrived after the client's timeout;
- the database holds every turn that got 200 exactly once, whole (message and reply), in the
  order it was answered, and nothing else;
- every reply audio fetched is complete (200, ffmpeg decodes it).
Prints the figures as JSON (and writes them with --json); exits non-zero on any problem.

usage: scripts/load_test.py [--concurrency 24] [--duration 120] [--sessions 48] [--voice-share 0.5]
                            [--url https://host --ca ca.pem --database-url postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.pool import NullPool

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
HEADERS = {"X-API-Key": API_KEY}


def webm(path: Path, seconds: float | None = None) -> bytes:
    """A clip as a browser records it (WebM/Opus), cut to its first `seconds` if given."""
    cut = ["-t", str(seconds)] if seconds else []
    return subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), *cut, "-c:a", "libopus", "-f", "webm", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


@dataclass
class LoadPlan:
    sessions: int
    concurrency: int
    turns: int | None = None
    """Turns in all (None: until `duration`)."""
    duration: float | None = None
    """Seconds during which turns are sent (None: until `turns`)."""
    voice_share: float = 0.5
    seed: int = 7
    retry_refused: bool = False
    """Send a turn lea-local refused (503: nothing stored) again, rather than the session's next one."""
    retry_pause: float = 1.0
    max_attempts: int = 1000
    fetch_audio: bool = True
    client_timeout: dict[str, float] = field(default_factory=lambda: dict(CLIENT_TIMEOUT))
    """Seconds a client waits for a text or voice turn's answer (ImmoAssist's by default)."""
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    """Names this run's sessions and request ids (runs against one database stay apart)."""

    def session_id(self, session: int) -> str:
        return f"load-{self.tag}-{session:03d}"

    def kind(self, session: int, turn: int) -> str:
        return "voice" if random.Random(f"{self.seed}-{session}-{turn}").random() < self.voice_share else "text"


@dataclass
class Attempt:
    """One request of a turn (a refused turn sent again is a second attempt of it)."""

    session: int
    session_id: str
    turn: int
    attempt: int
    kind: str
    request_id: str
    message: str | None
    """The text sent (a text turn)."""
    status: int
    """HTTP status; -1: the client's timeout; 0: no answer (connection lost)."""
    from_lea: bool
    """Answered by lea-local itself (it sets X-Request-ID), not by a proxy in front of it."""
    body: dict
    sent_at: float
    latency: float
    audio_status: int | None = None
    audio: bytes | None = None
    audio_request_id: str | None = None

    @property
    def user_text(self) -> str | None:
        """What the turn stores as the user's message."""
        return self.body.get("transcription") if self.kind == "voice" else self.message

    @property
    def may_be_stored(self) -> bool:
        """200; or no word from lea-local (its process died or the connection broke mid-turn),
        so the turn may have been stored before its answer was lost. lea-local's own errors
        store nothing."""
        return self.status == 200 or not self.from_lea


async def run_sessions(
    client: httpx.AsyncClient,
    plan: LoadPlan,
    recordings: list[bytes],
    *,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> list[Attempt]:
    """Runs the plan's turns through `client` (its base URL: a server, or nginx); returns every attempt."""
    attempts: list[Attempt] = []
    free: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for session in range(plan.sessions):
        free.put_nowait((session, 0))
    started = time.monotonic()
    sent = 0

    def in_time() -> bool:
        return plan.duration is None or time.monotonic() - started < plan.duration

    def more() -> bool:
        return in_time() and (plan.turns is None or sent < plan.turns)

    async def one(session: int, turn: int, attempt: int) -> Attempt:
        kind = plan.kind(session, turn)
        session_id = plan.session_id(session)
        request_id = f"{plan.tag}-s{session:03d}-t{turn:03d}-a{attempt}"
        headers = {**HEADERS, "X-Request-ID": request_id}
        message = f"[{session_id} t{turn}] {QUESTIONS[(session + turn) % len(QUESTIONS)]}" if kind == "text" else None
        sent_at = time.monotonic()
        try:
            if kind == "text":
                r = await client.post(
                    CHAT_PATH,
                    json={"message": message, "session_id": session_id},
                    headers=headers,
                    timeout=plan.client_timeout[kind],
                )
            else:
                r = await client.post(
                    VOICE_PATH,
                    files={"audio": ("recording.webm", recordings[(session + turn) % len(recordings)], "audio/webm")},
                    data={"session_id": session_id, "user_id": f"agent-{session % 5}", "user_email": ""},
                    headers=headers,
                    timeout=plan.client_timeout[kind],
                )
            status, from_lea = r.status_code, "x-request-id" in r.headers
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        except httpx.TimeoutException:
            status, from_lea, body = -1, False, {}  # the client gave up, as ImmoAssist would
        except httpx.HTTPError as exc:
            status, from_lea, body = 0, False, {"error": repr(exc)}
        done = Attempt(
            session=session,
            session_id=session_id,
            turn=turn,
            attempt=attempt,
            kind=kind,
            request_id=request_id,
            message=message,
            status=status,
            from_lea=from_lea,
            body=body,
            sent_at=sent_at,
            latency=time.monotonic() - sent_at,
        )
        if status == 200 and kind == "voice" and plan.fetch_audio and body.get("assistant_audio_url"):
            done.audio_request_id = f"{request_id}-audio"
            try:
                audio = await client.get(
                    body["assistant_audio_url"], headers={"X-Request-ID": done.audio_request_id}, timeout=120
                )
                done.audio_status, done.audio = audio.status_code, audio.content
            except httpx.HTTPError:
                done.audio_status = 0
        return done

    async def client_loop() -> None:
        nonlocal sent
        while more():
            try:
                session, turn = free.get_nowait()
            except asyncio.QueueEmpty:
                await asyncio.sleep(0.01)  # every session busy with its previous turn
                continue
            sent += 1
            for attempt in range(plan.max_attempts):
                done = await one(session, turn, attempt)
                attempts.append(done)
                if on_attempt is not None:
                    on_attempt(done)
                if done.status != 503:
                    break
                await asyncio.sleep(plan.retry_pause)
                # Only lea-local's own refusal is surely not stored: that turn may be sent again.
                if not (plan.retry_refused and done.from_lea and in_time()):
                    break
            free.put_nowait((session, turn + 1))

    await asyncio.gather(*(client_loop() for _ in range(plan.concurrency)))
    return attempts


# --- what the database holds -------------------------------------------------------------------
def read_stored(database_url: str, session_ids: list[str]) -> dict[str, list[list[tuple]]]:
    """Session → its conversations (oldest first), each its messages in order as
    (role, content, model), read straight from the database (not through lea-local)."""
    engine = create_engine(database_url, poolclass=NullPool)
    query = text(
        "SELECT c.session_id, c.id, m.role, m.content, m.model FROM conversations c "
        "JOIN messages m ON m.conversation_id = c.id WHERE c.session_id IN :sessions ORDER BY c.id, m.id"
    ).bindparams(bindparam("sessions", expanding=True))
    try:
        with engine.connect() as db:
            rows = db.execute(query, {"sessions": session_ids}).all() if session_ids else []
    finally:
        engine.dispose()
    conversations: dict[str, dict[int, list[tuple]]] = defaultdict(dict)
    for session_id, conversation_id, *message in rows:
        conversations[session_id].setdefault(conversation_id, []).append(tuple(message))
    return {session: list(by_id.values()) for session, by_id in conversations.items()}


def stored_turns(conversations: list[list[tuple]]) -> tuple[list[tuple[str, str]], list[str]]:
    """A session's stored turns as (user message, reply), and what is wrong with them: more
    than one conversation, or a message that is not part of a whole turn."""
    problems = [f"{len(conversations)} conversations"] if len(conversations) > 1 else []
    turns: list[tuple[str, str]] = []
    for messages in conversations:
        roles = [role for role, *_ in messages]
        if roles != ["user", "assistant"] * (len(messages) // 2) or len(messages) % 2:
            problems.append(f"not whole turns: {roles}")
        for user, reply in zip(messages[::2], messages[1::2], strict=False):
            if not reply[1] or not reply[2]:
                problems.append(f"a reply without text or model: {reply}")
            turns.append((user[1], reply[1]))
    return turns, problems


def check_stored(attempts: list[Attempt], stored: dict[str, list[list[tuple]]]) -> list[str]:
    """Each session's stored turns are exactly its answered turns (200), whole, in order; a turn
    whose answer was lost with its replica may be stored too (once, in its place)."""
    problems: list[str] = []
    by_session: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in sorted(attempts, key=lambda a: (a.session, a.turn, a.attempt)):
        by_session[attempt.session_id].append(attempt)
    for session_id in set(by_session) | set(stored):
        turns, wrong = stored_turns(stored.get(session_id, []))
        problems += [f"{session_id}: {what}" for what in wrong]
        sent = by_session.get(session_id, [])
        answered = [(a.user_text, a.body.get("response")) if a.status == 200 else None for a in sent]
        position = 0
        for index, attempt in enumerate(sent):
            here = turns[position] if position < len(turns) else None
            if attempt.status == 200:
                if here != answered[index]:
                    problems.append(f"{session_id}: turn {attempt.turn} ({attempt.request_id}) stored as {here}")
                    break
                position += 1
            elif attempt.may_be_stored and here is not None:
                # Its answer was lost: stored once in its place, or not at all (then `here` is
                # the next answered turn).
                next_answered = next((pair for pair in answered[index + 1 :] if pair is not None), None)
                if here != next_answered and (attempt.kind == "voice" or here[0] == attempt.message):
                    position += 1
        else:
            if position != len(turns):
                problems.append(f"{session_id}: {len(turns) - position} stored turns nobody sent: {turns[position:]}")
    return problems


# --- the reply audio ---------------------------------------------------------------------------
def decode_problem(data: bytes) -> str | None:
    """None when ffmpeg reads the whole stream without an error, else what it said."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", "pipe:0", "-f", "null", "-"],
        input=data,
        capture_output=True,
        timeout=60,
    )
    if result.returncode != 0 or result.stderr.strip():
        return result.stderr.decode(errors="replace")[:300] or f"ffmpeg exited {result.returncode}"
    return None


def check_audio(attempts: list[Attempt], audio_dir: Path | None = None, public_url: str | None = None) -> list[str]:
    """Every fetched reply audio: 200, under the public origin, whole (the stored file's bytes
    when `audio_dir` is given), and decodable."""
    problems = []
    for a in attempts:
        if a.audio_request_id is None:
            continue
        url = a.body["assistant_audio_url"]
        if public_url is not None and not url.startswith(f"{public_url}/media/tts/"):
            problems.append(f"{a.request_id}: audio URL {url} is not under {public_url}")
        if a.audio_status != 200 or not a.audio:
            problems.append(f"{a.request_id}: audio answered {a.audio_status}")
            continue
        if audio_dir is not None:
            stored = audio_dir / url.rsplit("/", 1)[1]
            if not stored.exists() or stored.read_bytes() != a.audio:
                problems.append(f"{a.request_id}: audio fetched ({len(a.audio)} bytes) is not the stored file")
        if (problem := decode_problem(a.audio)) is not None:
            problems.append(f"{a.request_id}: audio does not decode: {problem}")
    return problems


def summarise(attempts: list[Attempt], elapsed: float) -> dict:
    ok = [a for a in attempts if a.status == 200]
    refused = [a.latency for a in attempts if a.status == 503]
    statuses: dict[str, int] = defaultdict(int)
    for a in attempts:
        statuses[str(a.status)] += 1
    return {
        "turns": len({(a.session, a.turn) for a in attempts}),
        "attempts": len(attempts),
        "statuses": dict(statuses),
        "elapsed_s": round(elapsed, 2),
        "throughput_turns_per_s": round(len(ok) / elapsed, 3) if elapsed else None,
        "latency_s": {
            kind: {
                "p50": round(percentile([a.latency for a in ok if a.kind == kind], 0.5), 3),
                "p95": round(percentile([a.latency for a in ok if a.kind == kind], 0.95), 3),
                "max": round(max([a.latency for a in ok if a.kind == kind], default=float("nan")), 3),
                "n": sum(1 for a in ok if a.kind == kind),
            }
            for kind in ("text", "voice")
        },
        "refused_503": {
            "n": len(refused),
            "p50_ms": round(1000 * percentile(refused, 0.5), 1),
            "p99_ms": round(1000 * percentile(refused, 0.99), 1),
        },
        "answers_after_client_timeout": statuses.get("-1", 0),
    }


def check_answers(attempts: list[Attempt]) -> list[str]:
    problems = []
    for a in attempts:
        if a.status == 200 and a.latency > BUDGET[a.kind] + 1.0:
            problems.append(f"a {a.kind} 200 took {a.latency:.1f} s, over its {BUDGET[a.kind]:g} s budget")
        elif a.status not in (200, 503):
            problems.append(f"a {a.kind} turn answered {a.status} after {a.latency:.1f} s")
    return problems


async def run(args: argparse.Namespace) -> dict:
    recordings = [webm(p, args.clip_seconds) for p in CLIPS]
    plan = LoadPlan(
        sessions=max(args.sessions, args.concurrency),
        concurrency=args.concurrency,
        turns=args.turns,
        duration=args.duration,
        voice_share=args.voice_share,
        seed=args.seed,
        retry_refused=args.retry_refused,
        retry_pause=args.retry_pause,
    )
    server = None
    if args.url:
        base_url, database_url = args.url, args.database_url
        if not database_url:
            raise SystemExit("--url needs --database-url (where the turns are read back)")
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="lea-load-"))
        env = {"LEA_LLM_MAX_REPLY_TOKENS": str(args.max_tokens), "LEA_PRESET": args.preset}
        server = LeaServer(data_dir, Path(args.models_dir).resolve(), env)
        server.start()
        base_url, database_url = server.url, f"sqlite:///{data_dir / 'lea.sqlite3'}"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=args.ca) if args.ca else True
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(
            base_url=base_url, verify=verify, limits=httpx.Limits(max_connections=100)
        ) as client:
            attempts = await run_sessions(client, plan, recordings)
        elapsed = time.monotonic() - started
    finally:
        if server is not None:
            server.stop()
    stored = read_stored(database_url, [plan.session_id(s) for s in range(plan.sessions)])
    problems = check_answers(attempts) + check_stored(attempts, stored) + check_audio(attempts)
    return {
        **summarise(attempts, elapsed),
        "concurrency": args.concurrency,
        "sessions": plan.sessions,
        "duration_s": args.duration,
        "max_reply_tokens": args.max_tokens,
        "stored_messages": sum(len(m) for conversations in stored.values() for m in conversations),
        "problems": problems,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds during which turns are sent")
    parser.add_argument("--turns", type=int, help="stop after this many turns (default: only the duration)")
    parser.add_argument("--sessions", type=int, default=48)
    parser.add_argument("--voice-share", type=float, default=0.5)
    parser.add_argument("--clip-seconds", type=float, help="cut the voice clips to their first seconds")
    parser.add_argument("--max-tokens", type=int, default=256, help="LLM reply length of the server started here")
    parser.add_argument("--retry-pause", type=float, default=1.0, help="seconds a client waits after a 503")
    parser.add_argument("--retry-refused", action="store_true", help="send a refused turn again")
    parser.add_argument("--url", help="a running deployment (default: start a server here)")
    parser.add_argument("--ca", help="CA certificate that signed the deployment's (https)")
    parser.add_argument("--database-url", help="the deployment's database, where turns are read back")
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
