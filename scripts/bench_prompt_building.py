#!/usr/bin/env python3
"""How long a turn spends building its prompt (reading the history from the database and fitting
it into the context window with the real tokenizer) as a conversation grows.

For each conversation length, a fresh SQLite database holds that many stored messages; the
figure is the median time of `context_for` + `build_prompt`, as a turn runs them (the second
part while it holds the language model). `whole history` is the way it was done before: every
message read, the binary search over all of them. With the tiny preset's real tokenizer:

    .venv/bin/python scripts/bench_prompt_building.py
    .venv/bin/python scripts/bench_prompt_building.py --sizes 10 100 1000 10000 --context 4096
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lea_local.llm.base import ChatMessage  # noqa: E402
from lea_local.llm.context import fit_to_context  # noqa: E402
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine  # noqa: E402
from lea_local.pipeline.turns import ChatTurns  # noqa: E402
from lea_local.runtime.inference_queue import InferenceQueue  # noqa: E402
from lea_local.services import read_system_prompt, resolve_model_paths  # noqa: E402
from lea_local.settings import Settings  # noqa: E402
from lea_local.store.conversations import ConversationStore, TurnRecord  # noqa: E402
from lea_local.store.database import utcnow  # noqa: E402

QUESTION = "Pour le T3 de la rue Garibaldi, quels diagnostics faut-il fournir avant la signature du compromis ?"
ANSWER = (
    "Pour une vente, le dossier de diagnostic technique comprend le DPE, l'état des risques, le constat "
    "de risque d'exposition au plomb si l'immeuble date d'avant 1949, l'amiante avant 1997, l'électricité "
    "et le gaz si l'installation a plus de quinze ans, et le mesurage loi Carrez en copropriété."
)


def stored_conversation(path: Path, messages: int) -> ConversationStore:
    store = ConversationStore.from_url(f"sqlite:///{path}")
    conversation = store.record_turn(TurnRecord("bench", None, QUESTION, utcnow(), ANSWER, utcnow(), "m", 1, 1))
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO messages (conversation_id, role, content, created_at) VALUES (?, ?, ?, ?)",
            [
                (
                    conversation,
                    "user" if i % 2 == 0 else "assistant",
                    f"{i} {QUESTION if i % 2 == 0 else ANSWER}",
                    utcnow(),
                )
                for i in range(max(messages - 2, 0))
            ],
        )
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1_000, 10_000], help="messages stored")
    parser.add_argument("--context", type=int, default=4096, help="context window, tokens (LEA_LLM_CONTEXT_SIZE)")
    parser.add_argument("--reply", type=int, default=384, help="reply tokens kept free (LEA_LLM_MAX_REPLY_TOKENS)")
    parser.add_argument("--runs", type=int, default=5, help="runs per size (the median is shown)")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-history comparison")
    args = parser.parse_args()
    fits = LastFit()
    turns_log = logging.getLogger("lea_local.pipeline.turns")
    turns_log.setLevel(logging.INFO)
    turns_log.addHandler(fits)
    turns_log.propagate = False

    settings = Settings(_env_file=None, api_keys="bench", preset="tiny", models_dir=args.models_dir)
    engine = LlamaCppChatEngine(resolve_model_paths(settings).llm, context_size=args.context, gpu_layers=0)
    print(f"model {engine.model_name}, context {engine.context_size} tokens, reply {args.reply}, {args.runs} runs")
    print(f"{'messages':>9} {'prompt building':>16} {'read':>6} {'kept':>6} {'token counts':>13} {'whole history':>14}")
    with tempfile.TemporaryDirectory() as directory:
        for size in args.sizes:
            store = stored_conversation(Path(directory) / f"{size}.sqlite3", size)
            turns = ChatTurns(
                engine=engine,
                store=store,
                llm_queue=InferenceQueue("language model", max_waiting=1),
                system_prompt=read_system_prompt(settings),
                max_reply_tokens=args.reply,
                temperature=0.3,
            )
            seconds = []
            for _ in range(args.runs):
                started = time.perf_counter()
                context = store.context_for("bench", None, turns.history_chars)
                turns.build_prompt(context, "Et pour une maison ?")
                seconds.append(time.perf_counter() - started)
            fit = fits.last  # what the last build read and tokenised (its llm.fit log record)
            whole = ""
            if not args.no_whole:
                started = time.perf_counter()
                everything = store.context_for("bench", None)
                fit_to_context(
                    turns.system_prompt,
                    [ChatMessage(m.role, m.content) for m in everything.history],  # type: ignore[arg-type]
                    ChatMessage("user", "Et pour une maison ?"),
                    count_tokens=engine.count_prompt_tokens,
                    budget=engine.context_size - args.reply,
                )
                whole = f"{time.perf_counter() - started:13.3f}s"
            print(
                f"{size:>9} {statistics.median(seconds):15.4f}s {fit.messages_read:>6} {fit.messages_kept:>6} "
                f"{fit.token_counts:>13} {whole:>14}"
            )
            store.close()


class LastFit(logging.Handler):
    """Keeps the last `llm.fit` record: what a prompt build read and tokenised."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "llm.fit":
            self.last = record


if __name__ == "__main__":
    main()
