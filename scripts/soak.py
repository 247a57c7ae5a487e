#!/usr/bin/env python3
"""Soak test of the server's memory: many turns over many sessions, text and voice, on 127.0.0.1.

Starts its own server (tiny preset unless --preset says otherwise) with a fresh data directory and
LEA_LLM_PROMPT_CACHE_MB=--cache-mb, then sends --turns turns over --sessions sessions, one at a
time, sessions taken in turn (a session's next turn comes after every other session's, so a
conversation's state has to come back from the prompt cache). Every --voice-every-th turn is a
voice turn (a French clip encoded to WebM/Opus by ffmpeg, as a browser sends it).

Prints the server's resident memory (VmRSS from /proc/<pid>/status) after warm-up and every
--every turns, the prompt cache's counters from /metrics at the end, and the verdict:
resident memory never above warm-up + --cache-mb + --overhead-mb (exit 1 otherwise, or when a turn
failed, or when the run was cut short by --time-limit).

usage: .venv/bin/python scripts/soak.py [--turns 300] [--sessions 100] [--cache-mb 1024]
                                        [--max-reply-tokens 48] [--voice-every 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.audio import BROWSER_FORMATS, encode, manifest  # noqa: E402
from tests.server import API_KEY, VOICE_PATH, LeaServer  # noqa: E402

QUESTIONS = [
    "Quels diagnostics pour vendre une maison ?",
    "Comment estimer un appartement à Lyon ?",
    "Que doit contenir un mandat exclusif ?",
    "Quel est le délai entre compromis et acte ?",
    "Comment préparer une visite ?",
    "Quels frais de notaire pour un achat ?",
    "Comment rédiger une annonce de location ?",
]
MIB = 1024 * 1024


def status_kib(pid: int, field: str) -> int:
    """A memory field (VmRSS, VmHWM…) of /proc/<pid>/status, in KiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {field} in /proc/{pid}/status")
    return int(match.group(1))


def prompt_cache_metrics(client: httpx.Client) -> dict[str, float]:
    """lea_llm_prompt_cache_* from /metrics (empty when the server does not publish them)."""
    text = client.get("/metrics", headers={"X-API-Key": API_KEY}).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^lea_llm_prompt_cache_(\w+?)(?:_total)? ([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--cache-mb", type=int, default=1024, help="LEA_LLM_PROMPT_CACHE_MB")
    parser.add_argument("--max-reply-tokens", type=int, default=48, help="LEA_LLM_MAX_REPLY_TOKENS")
    parser.add_argument("--voice-every", type=int, default=3, help="every n-th turn is a voice turn (0: none)")
    parser.add_argument("--every", type=int, default=25, help="print resident memory every n turns")
    parser.add_argument("--overhead-mb", type=int, default=300, help="allowed above warm-up + cache")
    parser.add_argument("--time-limit", type=float, default=7200, help="seconds before the run stops")
    parser.add_argument(
        "--timeout",
        type=float,
        default=900,
        help="a turn's time budget (server and client): memory is measured here, not speed",
    )
    parser.add_argument("--models-dir", default=str(REPO / "models"))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument(
        "--server-cwd",
        type=Path,
        default=REPO,
        help="run the lea_local package found here (another checkout: a before/after comparison)",
    )
    parser.add_argument("--json", type=Path, help="write the summary here")
    args = parser.parse_args()

    clips = sorted(manifest(), key=lambda c: c.seconds)[:3]
    recordings = [encode(c.path, BROWSER_FORMATS["webm-opus"][0]) for c in clips]
    env = {
        "LEA_PRESET": args.preset,
        "LEA_LLM_PROMPT_CACHE_MB": str(args.cache_mb),
        "LEA_LLM_MAX_REPLY_TOKENS": str(args.max_reply_tokens),
        "LEA_REQUEST_TIMEOUT_SECONDS": str(args.timeout),
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    server = LeaServer(Path(tempfile.mkdtemp(prefix="lea-soak-")), Path(args.models_dir).resolve(), env)
    server.cwd = args.server_cwd.resolve()
    server.start(timeout=600)
    assert server.process is not None
    pid = server.process.pid
    samples: list[dict] = []
    failures: list[str] = []
    session_ids: dict[int, str] = {}
    turns_done = 0
    started = time.monotonic()

    def sample(label: str) -> None:
        rss = status_kib(pid, "VmRSS") / 1024
        elapsed = round(time.monotonic() - started)
        samples.append({"turns": turns_done, "rss_mb": round(rss, 1), "elapsed_s": elapsed})
        print(f"{label:>12}  turns={turns_done:4d}  rss={rss:8.1f} MB  t={elapsed:6d} s", flush=True)

    try:
        with server.client(timeout=args.timeout + 30) as client:
            sample("warm-up")
            for turn in range(args.turns):
                if time.monotonic() - started > args.time_limit:
                    failures.append(f"time limit reached after {turns_done} turns")
                    break
                session = turn % args.sessions
                fields = {"session_id": session_ids[session]} if session in session_ids else {}
                if args.voice_every and turn % args.voice_every == args.voice_every - 1:
                    r = client.post(
                        VOICE_PATH,
                        files={"audio": ("recording.webm", recordings[turn % len(recordings)], "audio/webm")},
                        data=fields,
                        headers={"X-API-Key": API_KEY},
                    )
                else:
                    message = f"{QUESTIONS[turn % len(QUESTIONS)]} (dossier {session})"
                    r = server.chat(client, message, **fields)
                turns_done += 1
                if r.status_code == 200:
                    session_ids.setdefault(session, r.json()["session_id"])
                else:
                    failures.append(f"turn {turn}: HTTP {r.status_code} {r.text[:200]}")
                if turns_done % args.every == 0:
                    sample("")
            if turns_done % args.every:
                sample("end")
            cache = prompt_cache_metrics(client)
        peak_mb = status_kib(pid, "VmHWM") / 1024
    finally:
        server.stop()

    warm = samples[0]["rss_mb"]
    highest = max(s["rss_mb"] for s in samples)
    bound = warm + args.cache_mb + args.overhead_mb
    looked_up = cache.get("looked_up_tokens", 0)
    lookups = cache.get("hits", 0) + cache.get("misses", 0)
    summary = {
        "turns": turns_done,
        "sessions": args.sessions,
        "cache_mb": args.cache_mb,
        "max_reply_tokens": args.max_reply_tokens,
        "elapsed_s": round(time.monotonic() - started),
        "rss_mb": samples,
        "rss_warm_up_mb": warm,
        "rss_highest_sample_mb": highest,
        "rss_peak_vmhwm_mb": round(peak_mb, 1),
        "bound_mb": round(bound, 1),
        "prompt_cache": cache or None,
        "prompt_cache_hit_rate": round(cache["hits"] / lookups, 3) if lookups else None,
        "prompt_tokens_reused": round(cache.get("reused_tokens", 0) / looked_up, 3) if looked_up else None,
        "failures": failures,
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    within = highest <= bound
    print(
        f"verdict: {'PASS' if within and not failures else 'FAIL'}: highest resident {highest:.0f} MB "
        f"{'<=' if within else '>'} warm-up {warm:.0f} + cache {args.cache_mb} + {args.overhead_mb} MB"
        + (f"; {len(failures)} failure(s)" if failures else "")
    )
    return 0 if within and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
