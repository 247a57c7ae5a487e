#!/usr/bin/env python3
"""Retrieval quality of the knowledge base on the French test corpus (tests/fixtures/knowledge).

Indexes the corpus through `KnowledgeBase` in a temporary data directory (its SQLite database by
default, or the PostgreSQL database given with --database-url), asks every question of
questions.tsv and prints recall@1, recall@3, recall@5 and the mean reciprocal rank (over the top
5), for all questions, the direct ones and the paraphrased ones, then the misses. A hit is a
returned passage of the right document that contains the question's excerpt (compared
accent- and space-normalised), or one of the other answering passages the question lists.

    .venv/bin/python scripts/eval_knowledge_retrieval.py
    .venv/bin/python scripts/eval_knowledge_retrieval.py --database-url postgresql+psycopg://…/db
    .venv/bin/python scripts/eval_knowledge_retrieval.py --no-thesaurus --min-recall3 0.9
    LEA_EMBEDDING_URL=http://gpu-box:8081/v1 LEA_EMBEDDING_MODEL=bge-m3 \
        .venv/bin/python scripts/eval_knowledge_retrieval.py --calibrate

`dense` retrieval uses the sentence encoder the server would: the one at LEA_EMBEDDING_URL, else
the bundled multilingual-e5-small. --calibrate also prints how close in meaning that encoder finds
the answering passages and the questions outside the documents (tests/fixtures/knowledge/
unrelated.txt), and suggests a LEA_EMBEDDING_CLOSE_SIMILARITY for it.

It reports and exits 0; with --min-recall3 it exits 1 when the overall recall@3 is below it.
--database-url writes the corpus's documents into that database: give it a scratch one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from sqlalchemy import select  # noqa: E402

from lea_local.knowledge import tables  # noqa: E402
from lea_local.knowledge.french import Thesaurus  # noqa: E402
from lea_local.knowledge.library import KnowledgeBase, Passage, Retrieval, sentence_encoder  # noqa: E402
from lea_local.settings import Settings  # noqa: E402
from lea_local.store.database import create_database_engine  # noqa: E402
from lea_local.store.schema import upgrade_schema  # noqa: E402
from tests.fixtures.knowledge.corpus import (  # noqa: E402
    CORPUS,
    HERE,
    Question,
    contains_excerpt,
    load_questions,
)

UNRELATED = HERE / "unrelated.txt"

DEPTH = 5

# A thesaurus with one rule that no question triggers: the analyser's plain terms only.
# (An empty Thesaurus would make KnowledgeBase fall back to the shipped one.)
NO_EXPANSION = Thesaurus(["zzyzx, xyzzy"])


@dataclass(frozen=True)
class Result:
    question: Question
    rank: int | None
    """1-based rank of the first passage that answers it, None when none of the top DEPTH does."""
    returned: tuple[Passage, ...]


@dataclass(frozen=True)
class Scores:
    questions: int
    recall_at_1: float
    recall_at_3: float
    recall_at_5: float
    mrr: float


def rank_of_answer(question: Question, passages: Sequence[Passage]) -> int | None:
    for rank, passage in enumerate(passages, start=1):
        if any(passage.file_name == f and contains_excerpt(passage.text, e) for f, e in question.answers):
            return rank
    return None


def scores(results: Sequence[Result]) -> Scores:
    count = len(results)

    def recall(k: int) -> float:
        return sum(1 for r in results if r.rank is not None and r.rank <= k) / count if count else 0.0

    mrr = sum(1 / r.rank for r in results if r.rank is not None) / count if count else 0.0
    return Scores(count, recall(1), recall(3), recall(5), mrr)


def index_corpus(knowledge: KnowledgeBase, corpus: Path = CORPUS) -> None:
    for path in sorted(corpus.iterdir()):
        if path.is_file():
            knowledge.add(path.name, path.read_bytes())


def evaluate(knowledge: KnowledgeBase, questions: Sequence[Question]) -> list[Result]:
    results = []
    for question in questions:
        returned = tuple(knowledge.search(question.question, limit=DEPTH))
        results.append(Result(question, rank_of_answer(question, returned), returned))
    return results


def evaluate_corpus(
    database_url: str | None,
    data_dir: Path,
    thesaurus: Thesaurus | None = None,
    retrieval: Retrieval = "dense",
    *,
    calibrate: bool = False,
) -> list[Result]:
    """Index the corpus in a fresh knowledge directory under data_dir (and in the database at
    database_url, or a SQLite file there) and ask every question."""
    engine = create_database_engine(database_url or f"sqlite:///{data_dir / 'lea.sqlite3'}")
    try:
        upgrade_schema(engine)
        encoder = sentence_encoder(Settings()) if retrieval == "dense" else None
        knowledge = KnowledgeBase(
            engine, data_dir / "knowledge", thesaurus=thesaurus, retrieval=retrieval, encoder=encoder
        )
        index_corpus(knowledge)
        questions = load_questions()
        results = evaluate(knowledge, questions)
        if calibrate:
            report_closeness(knowledge, questions)
        return results
    finally:
        engine.dispose()


def report_closeness(knowledge: KnowledgeBase, questions: Sequence[Question], out=sys.stdout) -> None:
    """How close the encoder finds each question's answering passage, and the closest passage to
    each question outside the documents; a close_similarity that keeps none of the latter."""
    p, d = tables.passages, tables.documents
    with knowledge.engine.connect() as connection:
        passages = connection.execute(select(p.c.id, d.c.file_name, p.c.text).join(d, d.c.id == p.c.document_id)).all()
    answered: dict[str, list[float]] = {"direct": [], "paraphrased": []}
    for question in questions:
        closeness = knowledge.closeness(question.question)
        answering = [
            closeness[row.id]
            for row in passages
            if row.id in closeness
            and any(row.file_name == f and contains_excerpt(row.text, e) for f, e in question.answers)
        ]
        if answering:
            answered["paraphrased" if question.paraphrased else "direct"].append(max(answering))
    unrelated = [line for line in UNRELATED.read_text(encoding="utf-8").splitlines() if line.strip()]
    outside = [max(knowledge.closeness(line).values(), default=0.0) for line in unrelated]
    if not outside or not answered["direct"]:
        print("\nno closeness to report (no sentence encoder)", file=out)
        return
    print(f"\ncloseness (best-window cosine) for {knowledge.encoder_name}:", file=out)
    print(f"{'':<30} {'n':>4} {'min':>6} {'median':>7} {'max':>6}", file=out)
    for name, values in (
        ("answering passage, direct", answered["direct"]),
        ("answering passage, paraphrased", answered["paraphrased"]),
        ("closest passage, unrelated", outside),
    ):
        print(
            f"{name:<30} {len(values):>4} {min(values):>6.3f} {np.median(values):>7.3f} {max(values):>6.3f}", file=out
        )
    # The next 0.005 above every unrelated question's closest passage: none of them is kept on
    # meaning alone.
    suggested = (np.floor(max(outside) / 0.005) + 1) * 0.005
    kept = {name: sum(v >= suggested for v in values) for name, values in answered.items()}
    print(
        f"suggested LEA_EMBEDDING_CLOSE_SIMILARITY={suggested:.3f}: keeps on meaning alone "
        f"{kept['direct']}/{len(answered['direct'])} direct and {kept['paraphrased']}/"
        f"{len(answered['paraphrased'])} paraphrased questions' passages, 0/{len(outside)} unrelated",
        file=out,
    )


def report(results: Sequence[Result], out=sys.stdout) -> None:
    groups = {
        "all": list(results),
        "direct": [r for r in results if not r.question.paraphrased],
        "paraphrased": [r for r in results if r.question.paraphrased],
        # The fusions' parameters (lea_local/knowledge/fusion.py) were tuned on the odd ones.
        "odd (tuned)": [r for r in results if int(r.question.id.lstrip("q")) % 2 == 1],
        "even (held)": [r for r in results if int(r.question.id.lstrip("q")) % 2 == 0],
    }
    print(f"{'questions':<12} {'n':>4} {'R@1':>6} {'R@3':>6} {'R@5':>6} {'MRR':>6}", file=out)
    for name, members in groups.items():
        s = scores(members)
        print(
            f"{name:<12} {s.questions:>4} {s.recall_at_1:>6.3f} {s.recall_at_3:>6.3f} {s.recall_at_5:>6.3f} "
            f"{s.mrr:>6.3f}",
            file=out,
        )
    misses = [r for r in results if r.rank is None or r.rank > 3]
    if misses:
        print(f"\nnot in the top 3 ({len(misses)}):", file=out)
    for miss in misses:
        q = miss.question
        where = f"rank {miss.rank}" if miss.rank else f"not in the top {DEPTH}"
        kind = "paraphrased" if q.paraphrased else "direct"
        print(f"- {q.id} ({kind}, {where}) {q.question}", file=out)
        print(f"    expected {q.file}: « {q.excerpt} »", file=out)
        for passage in miss.returned[:3]:
            print(f"    got {passage.file_name} § {passage.section}: {passage.text[:90]}…", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help="a scratch PostgreSQL (or SQLite) database; default: SQLite in a temp dir"
    )
    parser.add_argument("--no-thesaurus", action="store_true", help="search without the domain thesaurus's expansions")
    parser.add_argument(
        "--retrieval",
        choices=get_args(Retrieval),
        default="dense",
        help="beside the words: a sentence encoder (default), word vectors, or nothing (LEA_KNOWLEDGE_RETRIEVAL)",
    )
    parser.add_argument("--min-recall3", type=float, help="exit 1 when the overall recall@3 is below this")
    parser.add_argument(
        "--calibrate", action="store_true", help="also print the encoder's closeness and suggest a close_similarity"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lea-knowledge-eval-") as data_dir:
        thesaurus = NO_EXPANSION if args.no_thesaurus else None
        results = evaluate_corpus(
            args.database_url, Path(data_dir), thesaurus, args.retrieval, calibrate=args.calibrate
        )
    report(results)
    overall = scores(results).recall_at_3
    if args.min_recall3 is not None and overall < args.min_recall3:
        print(f"\nrecall@3 {overall:.3f} is below {args.min_recall3}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
