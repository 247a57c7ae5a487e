"""`lea-local knowledge add FILE… | list | remove ID… | search "QUERY" [--limit N] | reindex`.

Works on the same directory (LEA_KNOWLEDGE_DIR) and database (LEA_DATABASE_URL) as the server,
so a running server sees the change at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from lea_local.knowledge.extract import DocumentRejected
from lea_local.knowledge.library import Document, DocumentNotFound, KnowledgeBase, knowledge_base_for

PREVIEW_CHARS = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="knowledge_command", required=True)
    add = commands.add_parser("add", help="add documents (Markdown, text, HTML, PDF, DOCX), or replace same-named ones")
    add.add_argument("files", nargs="+", type=Path, metavar="FILE")
    listing = commands.add_parser("list", help="list the documents")
    listing.add_argument("--json", action="store_true", help="print JSON")
    remove = commands.add_parser("remove", help="remove documents (file and passages) by id")
    remove.add_argument("ids", nargs="+", type=int, metavar="ID")
    search = commands.add_parser("search", help="show the passages that best answer a question")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--limit", type=int, default=5, help="passages to show (default 5)")
    search.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("reindex", help="make the index match the directory (new, changed, removed files)")


def _open() -> KnowledgeBase:
    from lea_local.settings import Settings
    from lea_local.store.database import create_database_engine
    from lea_local.store.schema import upgrade_schema

    settings = Settings()
    engine = create_database_engine(settings.effective_database_url)
    upgrade_schema(engine)
    return knowledge_base_for(settings, engine)


def _json_ready(document: Document) -> dict:
    found = asdict(document)
    found["added_at"] = document.added_at.isoformat()
    found["updated_at"] = document.updated_at.isoformat()
    return found


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from lea_local.knowledge.directory import KnowledgeDirectoryNotShared
    from lea_local.runtime.inference_queue import QueueFull
    from lea_local.store.database import StoreUnavailable

    try:
        knowledge = _open()
    except ValidationError as exc:
        print(f"lea-local: cannot read the settings: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"lea-local: cannot open the database: {str(cause).strip()}", file=sys.stderr)
        return 1
    except KnowledgeDirectoryNotShared as exc:  # a reindex here would delete the others' rows
        print(f"lea-local: {exc}", file=sys.stderr)
        return 2
    try:
        handler = {"add": _add, "list": _list, "remove": _remove, "search": _search, "reindex": _reindex}
        return handler[args.knowledge_command](knowledge, args)
    except (QueueFull, StoreUnavailable) as exc:
        # The database or the embedding server is down: nothing was changed.
        print(f"lea-local: {exc}", file=sys.stderr)
        return 1
    finally:
        knowledge.engine.dispose()


def _add(knowledge: KnowledgeBase, args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"lea-local: {path}: cannot read it: {exc.strerror}", file=sys.stderr)
            failed += 1
            continue
        before = {document.file_name: document for document in knowledge.documents()}
        try:
            document = knowledge.add(path.name, data)
        except DocumentRejected as exc:
            print(f"lea-local: {path}: rejected: {exc}", file=sys.stderr)
            failed += 1
            continue
        previous = before.get(document.file_name)
        what = "added" if previous is None else "unchanged" if previous.sha256 == document.sha256 else "updated"
        print(f"{what} #{document.id} {document.file_name}: {document.title!r}, {document.passages} passages")
    return 1 if failed else 0


def _list(knowledge: KnowledgeBase, args: argparse.Namespace) -> int:
    documents = knowledge.documents()
    if args.json:
        print(json.dumps([_json_ready(d) for d in documents], ensure_ascii=False, indent=2))
        return 0
    if not documents:
        print(f"no documents in {knowledge.directory}")
    for d in documents:
        print(f"#{d.id:<4} {d.format:8} {d.passages:4} passages  {d.file_name}  {d.title!r}")
    return 0


def _remove(knowledge: KnowledgeBase, args: argparse.Namespace) -> int:
    failed = 0
    for document_id in args.ids:
        try:
            document = knowledge.remove(document_id)
        except DocumentNotFound as exc:
            print(f"lea-local: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"removed #{document.id} {document.file_name}")
    return 1 if failed else 0


def _search(knowledge: KnowledgeBase, args: argparse.Namespace) -> int:
    passages = knowledge.search(args.query, limit=max(1, args.limit))
    if args.json:
        print(json.dumps([asdict(p) for p in passages], ensure_ascii=False, indent=2))
        return 0
    if not passages:
        print("no passage found")
    for rank, p in enumerate(passages, start=1):
        text = p.text if len(p.text) <= PREVIEW_CHARS else p.text[:PREVIEW_CHARS] + "…"
        print(f"{rank}. [{p.score:.3f}] {p.title} — {p.section or '(start)'} ({p.file_name})")
        print("   " + text.replace("\n", "\n   "))
    return 0


def _reindex(knowledge: KnowledgeBase, args: argparse.Namespace) -> int:
    report = knowledge.reindex()
    for label in ("added", "updated", "removed", "unchanged"):
        names = getattr(report, label)
        print(f"{label}: {len(names)}" + (f" ({', '.join(names)})" if names and label != "unchanged" else ""))
    if report.encoded:
        print(f"encoded: {report.encoded} passages of unchanged documents")
    for name, reason in report.rejected.items():
        print(f"rejected: {name}: {reason}", file=sys.stderr)
    return 1 if report.rejected else 0
