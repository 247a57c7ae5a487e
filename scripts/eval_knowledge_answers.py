#!/usr/bin/env python3
"""Answer-level evaluation of the knowledge base: does Léa's answer contain the expected fact,
with and without the agency's documents? Not run in CI (minutes per question on a CPU).

    .venv/bin/python scripts/fetch_eval_model.py      # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, French-capable
    .venv/bin/python scripts/eval_knowledge_answers.py models/eval/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
        [--limit 3] [--questions q01,q03] [--per-question] [--threads N] [--max-tokens 160]
        [--only with|without] [--retrieval dense|words|lexical]

Each question of tests/fixtures/knowledge/questions.tsv is asked twice in a fresh session, through
the server's own turn code (`ChatTurns`, the locale's system prompt, `TurnGrounding`) on the
in-process llama.cpp engine at temperature 0: once with the test corpus indexed (SQLite, in a
temporary directory) and once without grounding. An answer counts when it contains the question's
expected fact, compared without case, accents, or spacing differences (“10 h à 14 h” matches
“10h a 14h”). Prints both shares, on direct and paraphrased questions apart, and each question's
answers with --per-question.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

import anyio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lea_local.knowledge.grounding import TurnGrounding  # noqa: E402
from lea_local.knowledge.library import KnowledgeBase, Retrieval  # noqa: E402
from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine  # noqa: E402
from lea_local.pipeline.turns import ChatTurns, TurnRequest  # noqa: E402
from lea_local.runtime.hardware import physical_cores  # noqa: E402
from lea_local.runtime.inference_queue import InferenceQueue  # noqa: E402
from lea_local.services import read_system_prompt  # noqa: E402
from lea_local.settings import Settings  # noqa: E402
from lea_local.store.conversations import ConversationStore  # noqa: E402
from tests.fixtures.knowledge.corpus import CORPUS, Question, fold, load_questions  # noqa: E402


def normalised(text: str) -> str:
    """Lower-case, no accents, no spaces or punctuation: a fact is found however it is spaced."""
    return re.sub(r"[\W_]+", "", fold(text))


def contains_fact(answer: str, fact: str) -> bool:
    return normalised(fact) in normalised(answer)


def build_turns(
    engine: LlamaCppChatEngine, data: Path, grounded: bool, settings: Settings, retrieval: Retrieval
) -> ChatTurns:
    store = ConversationStore.from_url(f"sqlite:///{data / ('grounded' if grounded else 'plain')}.sqlite3")
    grounding = None
    if grounded:
        knowledge = KnowledgeBase(store.engine, data / "knowledge", retrieval=retrieval)
        for document in sorted(CORPUS.iterdir()):
            knowledge.add(document.name, document.read_bytes())
        grounding = TurnGrounding(
            knowledge,
            max_passages=settings.knowledge_passages,
            max_prompt_tokens=settings.knowledge_max_prompt_tokens,
        )
    return ChatTurns(
        engine=engine,
        store=store,
        llm_queue=InferenceQueue("language model", max_waiting=1, stage="llm"),
        system_prompt=read_system_prompt(settings),
        max_reply_tokens=settings.llm_max_reply_tokens,
        temperature=0.0,
        grounding=grounding,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a French-capable instruct GGUF")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    parser.add_argument("--questions", default=None, help="comma-separated question ids (q01,q03…)")
    parser.add_argument("--per-question", action="store_true", help="print every answer")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--context-size", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=160, help="reply length (LEA_LLM_MAX_REPLY_TOKENS)")
    parser.add_argument(
        "--only",
        choices=["with", "without"],
        help="ask with the knowledge base only, or without it only (the other half of a run at temperature 0 "
        "does not change with retrieval)",
    )
    parser.add_argument("--retrieval", choices=get_args(Retrieval), default="dense", help="LEA_KNOWLEDGE_RETRIEVAL")
    args = parser.parse_args()

    questions: list[Question] = load_questions()
    if args.questions:
        wanted = set(args.questions.split(","))
        questions = [q for q in questions if q.id in wanted]
    questions = questions[: args.limit]
    # The server's defaults (locale, passages, budget), with this run's reply length.
    settings = Settings(llm_max_reply_tokens=args.max_tokens, _env_file=None)  # type: ignore[call-arg]
    engine = LlamaCppChatEngine(
        args.model,
        context_size=args.context_size,
        gpu_layers=0,
        threads=args.threads or physical_cores(),
        prompt_cache_bytes=0,
        repeat_penalty=settings.llm_repeat_penalty,
    )
    results: dict[bool, list[bool]] = {True: [], False: []}
    paraphrased: dict[bool, list[bool]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="lea-eval-") as tmp:
        data = Path(tmp)
        for grounded in [g for g in (True, False) if args.only in (None, "with" if g else "without")]:
            turns = build_turns(engine, data, grounded, settings, args.retrieval)
            for question in questions:
                started = time.perf_counter()
                result = anyio.run(lambda q=question: turns.take_turn(TurnRequest(q.question)))  # noqa: B023
                hit = contains_fact(result.reply, question.fact)
                results[grounded].append(hit)
                if question.paraphrased:
                    paraphrased[grounded].append(hit)
                if args.per_question:
                    label = "with knowledge" if grounded else "without"
                    seconds = time.perf_counter() - started
                    print(f"{question.id} [{label}] {'HIT ' if hit else 'miss'} ({seconds:.0f} s)")
                    print(f"  Q: {question.question}\n  expected: {question.fact}\n  A: {result.reply}")
                    if grounded:
                        print(f"  sources: {[f'{s.file} > {s.section}' for s in result.sources]}")
            turns.store.close()

    def share(hits: list[bool]) -> str:
        return f"{sum(hits)}/{len(hits)} = {sum(hits) / len(hits):.2f}" if hits else "n/a"

    print(f"\nmodel: {args.model.name}; {len(questions)} questions ({len(paraphrased[True])} paraphrased)")
    print(f"answers containing the expected fact, with the knowledge base:    {share(results[True])}")
    print(f"answers containing the expected fact, without the knowledge base: {share(results[False])}")
    print(f"paraphrased questions only: with {share(paraphrased[True])}, without {share(paraphrased[False])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
