#!/usr/bin/env python3
"""Knowledge base retrieval speed on a generated corpus (issue 11: p95 ≤ 20 ms at 1,000 pages).

Generates French-like Markdown documents (a fixed seed: the same corpus every run; content words
drawn from a real-estate vocabulary and generated French-looking words with Zipf's frequencies,
between function words),
indexes them through `KnowledgeBase.add`, then times `KnowledgeBase.search` (analysis, thesaurus
expansion, the question's encoding, both rankings, rows) on a few hundred questions and prints
p50/p95/max and the index time. With the default retrieval, indexing encodes every passage: about
50 minutes for 1,000 pages on 2 cores.

    .venv/bin/python scripts/bench_knowledge.py                      # SQLite in a temporary directory
    .venv/bin/python scripts/bench_knowledge.py --database-url postgresql+psycopg://user:pw@host/db
    .venv/bin/python scripts/bench_knowledge.py --data-dir /tmp/bench-kb   # kept: a rerun skips indexing

It also times a turn's whole retrieval (`TurnGrounding.retrieve`: the message's search, the
search with the user's two previous messages, and the terms' weighing) on the same questions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lea_local.knowledge.grounding import TurnGrounding  # noqa: E402
from lea_local.knowledge.library import KnowledgeBase, Retrieval  # noqa: E402
from lea_local.store.database import create_database_engine  # noqa: E402
from lea_local.store.schema import upgrade_schema  # noqa: E402

WORDS_PER_PAGE = 400
PAGES_PER_DOCUMENT = 10
VOCABULARY = 20_000
FUNCTION_WORDS = 50

DOMAIN = """courtier acheteur vendeur propriété maison condo copropriété syndicat notaire hypothèque prêt
commission rétribution honoraires frais taxe bienvenue municipale inspection inspecteur vice caché
défaut garantie légale promesse achat offre contre-proposition déclarations formulaire contrat
courtage mandat exclusivité visite délai condition financement banque taux amortissement mise fonds
acompte dépôt fidéicommis signature acte vente possession clés locataire bail loyer évaluation prix
valeur marché terrain zonage permis toiture fondation fenêtre chauffage puits fosse septique agence
bureau horaire ouverture samedi rendez-vous plainte syndic assurance responsabilité identité
renseignements personnels confidentialité publicité annonce photos inscription collaboration""".split()
GLUE = """le la les un une des du de et à au aux en dans pour par sur avec sans que qui est sont doit
peut sera avant après lorsque si ne pas plus chaque tout leur son sa ses cette ce""".split()
SYLLABLES = "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo fu ga ge gi go la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu tion ment eur ance ité".split()  # noqa: E501


def vocabulary(rng: random.Random, size: int) -> list[str]:
    generated = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(size * 2)}
    words = DOMAIN + sorted(generated)[: size - len(DOMAIN)]
    rng.shuffle(words)
    return words


def zipf_weights(count: int) -> list[float]:
    """Zipf's law for the content words of real text: they come after the ~50 commonest words
    (articles, prepositions: GLUE here), so their ranks start there."""
    return [1.0 / (rank + FUNCTION_WORDS) for rank in range(count)]


def sentence(rng: random.Random, words: list[str], weights: list[float]) -> str:
    chosen = rng.choices(words, weights, k=rng.randint(8, 20))
    mixed = [word if rng.random() > 0.4 else f"{rng.choice(GLUE)} {word}" for word in chosen]
    return " ".join(mixed).capitalize() + "."


def document(rng: random.Random, number: int, words: list[str], weights: list[float]) -> str:
    lines = [f"# Document {number} : {' '.join(rng.choices(DOMAIN, k=3))}", ""]
    for page in range(PAGES_PER_DOCUMENT):
        lines += [f"## Section {page + 1} : {' '.join(rng.choices(words, weights, k=2))}", ""]
        written = 0
        while written < WORDS_PER_PAGE:
            paragraph = " ".join(sentence(rng, words, weights) for _ in range(rng.randint(3, 6)))
            written += len(paragraph.split())
            lines += [paragraph, ""]
    return "\n".join(lines)


def question(rng: random.Random, words: list[str], weights: list[float]) -> str:
    content = rng.choices(words, weights, k=rng.randint(2, 5)) + rng.choices(DOMAIN, k=rng.randint(0, 2))
    return f"{rng.choice(['Quel est', 'Comment', 'Qui paie', 'Est-ce que'])} {' '.join(content)} ?"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=1000, help="pages of ~400 words (default 1000)")
    parser.add_argument("--queries", type=int, default=300, help="searches timed (default 300)")
    parser.add_argument("--limit", type=int, default=5, help="passages per search (default 5)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--database-url", help="an empty database (default: SQLite in a temporary directory)")
    parser.add_argument(
        "--retrieval",
        choices=get_args(Retrieval),
        default="dense",
        help="beside the words: the sentence encoder (default), word vectors, or nothing (LEA_KNOWLEDGE_RETRIEVAL)",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="keep the indexed corpus here (SQLite); a rerun on it skips indexing"
    )
    args = parser.parse_args()

    # The bundled encoder spreads a question over the cores (OpenMP): its time depends on them.
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    print(f"{os.cpu_count()} cores, encoder threads: {threads}")
    rng = random.Random(args.seed)
    words = vocabulary(rng, VOCABULARY)
    weights = zipf_weights(len(words))
    documents = max(1, args.pages // PAGES_PER_DOCUMENT)
    with contextlib.ExitStack() as stack:
        if args.data_dir is not None:
            args.data_dir.mkdir(parents=True, exist_ok=True)
            scratch = str(args.data_dir)
        else:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="lea-bench-knowledge-"))
        url = args.database_url or f"sqlite:///{scratch}/lea.sqlite3"
        engine = create_database_engine(url)
        upgrade_schema(engine)
        knowledge = KnowledgeBase(engine, Path(scratch) / "knowledge", retrieval=args.retrieval)
        texts = [document(rng, number, words, weights) for number in range(documents)]
        kept = knowledge.documents()
        if kept:
            print(f"{engine.dialect.name}, {args.retrieval}: reusing {len(kept)} documents, "
                  f"{sum(d.passages for d in kept)} passages in {scratch}")  # fmt: skip
        else:
            started = time.perf_counter()
            passages = sum(knowledge.add(f"document-{n:04d}.md", t.encode()).passages for n, t in enumerate(texts))
            index_seconds = time.perf_counter() - started
            total_words = sum(len(t.split()) for t in texts)
            print(
                f"{engine.dialect.name}, {args.retrieval}: indexed {documents} documents, "
                f"{documents * PAGES_PER_DOCUMENT} pages, {total_words} words, {passages} passages "
                f"in {index_seconds:.1f} s"
            )

        questions = [question(rng, words, weights) for _ in range(args.queries)]
        started = time.perf_counter()
        knowledge.search(questions[0], args.limit)  # loads the model or vectors, fills the passages' cache
        print(f"first search (model loaded, passages' vectors cached): {time.perf_counter() - started:.2f} s")
        for warm in questions[:10]:
            knowledge.search(warm, args.limit)
        timings: list[float] = []
        found = 0
        for asked in questions:
            started = time.perf_counter()
            found += bool(knowledge.search(asked, args.limit))
            timings.append((time.perf_counter() - started) * 1000)
        print(
            f"search ({args.queries} questions, limit {args.limit}): p50 {statistics.median(timings):.1f} ms, "
            f"p95 {percentile(timings, 0.95):.1f} ms, max {max(timings):.1f} ms; "
            f"{found} of {args.queries} found passages"
        )
        grounding = TurnGrounding(knowledge, max_passages=3, max_prompt_tokens=700)
        turns: list[float] = []
        for n, asked in enumerate(questions):
            started = time.perf_counter()
            grounding.retrieve(asked, questions[max(0, n - 2) : n])
            turns.append((time.perf_counter() - started) * 1000)
        print(
            f"a turn's retrieval (both searches and the terms' weighing): p50 {statistics.median(turns):.1f} ms, "
            f"p95 {percentile(turns, 0.95):.1f} ms, max {max(turns):.1f} ms"
        )
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
