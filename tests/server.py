"""Run the real server (`python -m lea_local serve`) in a subprocess on 127.0.0.1, for tests
that talk to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-6c1f0d2a9b"
CHAT_PATH = "/api/external/agent/chat"
VOICE_PATH = "/api/external/agent/chat/voice"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LeaServer:
    def __init__(self, data_dir: Path, models_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.models_dir = models_dir
        self.extra_env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEA_") and k != "AGENT_API_KEY"}
        env.update(
            {
                "AGENT_API_KEY": API_KEY,
                "LEA_HOST": "127.0.0.1",
                "LEA_PORT": str(self.port),
                "LEA_DATA_DIR": str(self.data_dir),
                "LEA_MODELS_DIR": str(self.models_dir),
                "LEA_PRESET": "tiny",
                "LEA_LLM_THREADS": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> LeaServer:
        self.spawn()
        self.wait_until_ready(timeout)
        return self

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lea_local", "serve"],
            cwd=REPO,
            env=self.environment(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as in a power cut of the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def restart(self) -> LeaServer:
        self.stop()
        return self.start()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return events

    def client(self, **kwargs) -> httpx.Client:
        kwargs.setdefault("timeout", 120)
        return httpx.Client(base_url=self.url, **kwargs)

    def chat(self, client: httpx.Client, message: str, **fields) -> httpx.Response:
        return client.post(CHAT_PATH, json={"message": message, **fields}, headers={"X-API-Key": API_KEY})
