"""A real Chromium (Debian's `chromium` and `chromium-driver`, installed by `scripts/install --test`)
driven by selenium 4, headless, for the console and OpenAPI page tests: a fake microphone fed
from a WAV file, autoplay allowed, and every request the page makes recorded (Chrome's
performance log of DevTools Network events) so that a test can check none left 127.0.0.1.

Screenshots go to $LEA_TEST_ARTIFACTS (default tests/artifacts/, git-ignored)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.server import REPO

# Schemes that never leave the browser.
LOCAL_SCHEMES = ("data:", "blob:", "about:", "chrome-error:", "chrome:")


def artifacts_dir() -> Path:
    """Where screenshots go: $LEA_TEST_ARTIFACTS, else tests/artifacts/ (ignored by git)."""
    path = Path(os.environ.get("LEA_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    if "LEA_TEST_ARTIFACTS" not in os.environ:
        (path / ".gitignore").write_text("*\n")
    return path


def wav_of(clip: Path, into: Path) -> Path:
    """The clip as 48 kHz mono 16-bit WAV, the file Chromium's fake microphone reads."""
    wav = into / f"{clip.stem}.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(clip), "-ac", "1", "-ar", "48000", str(wav)],
        check=True,
    )
    return wav


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `scripts/install --test` installs Debian's chromium and chromium-driver")
    return path


class Browser:
    """One headless Chromium window of the given width."""

    def __init__(self, *, width: int, height: int = 1000, microphone: Path | None = None) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = _tool("chromium")
        for argument in [
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            f"--window-size={width},{height}",
            "--lang=fr-FR",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            # Chromium's own calls home (updates, sync, metrics) stay off: only the page talks.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
        ]:
            options.add_argument(argument)
        if microphone is not None:
            options.add_argument(f"--use-file-for-fake-audio-capture={microphone}")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        # An explicit driver path: Selenium Manager (which would download a driver) never runs.
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=_tool("chromedriver")))
        self.driver.set_window_size(width, height)
        self.width = width
        self.requested: list[str] = []
        self.console_messages: list[dict] = []

    def open(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: object) -> object:
        return self.driver.execute_script(script, *args)

    def collect_logs(self) -> None:
        """Moves the requests made and the page's console messages since the last call into
        `requested` and `console_messages`."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        self.console_messages += self.driver.get_log("browser")

    def outside_requests(self, origin: str) -> list[str]:
        """Every URL requested so far that was neither on `origin` nor local to the browser."""
        self.collect_logs()
        return [url for url in self.requested if not url.startswith((origin + "/", *LOCAL_SCHEMES))]

    def screenshot(self, name: str) -> Path:
        """A full-page PNG under the artifacts folder (the test prints where)."""
        path = artifacts_dir() / f"{name}.png"
        self.js("window.scrollTo(0, 0)")
        height = int(self.js("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"))
        self.driver.set_window_size(self.width, min(max(height + 120, 600), 4000))
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def quit(self) -> None:
        self.driver.quit()


@contextmanager
def browser(*, width: int, microphone: Path | None = None) -> Iterator[Browser]:
    opened = Browser(width=width, microphone=microphone)
    try:
        yield opened
    finally:
        opened.quit()
