"""The real server (`python -m lea_local serve`) on 127.0.0.1, with the tests' settings."""

from __future__ import annotations

from pathlib import Path

import httpx

from lea_local.tools.server_process import ServerProcess

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-6c1f0d2a9b"
CHAT_PATH = "/api/external/agent/chat"
VOICE_PATH = "/api/external/agent/chat/voice"


class LeaServer(ServerProcess):
    """The tiny preset's real models, a data directory of the test's own."""

    def __init__(self, data_dir: Path, models_dir: Path, env: dict[str, str] | None = None) -> None:
        defaults = {"LEA_MODELS_DIR": str(models_dir), "LEA_PRESET": "tiny", "LEA_LLM_THREADS": "2"}
        super().__init__(data_dir, {**defaults, **(env or {})}, api_key=API_KEY, cwd=REPO)
        self.models_dir = models_dir

    def client(self, **kwargs) -> httpx.Client:
        kwargs.setdefault("timeout", 120)
        return httpx.Client(base_url=self.url, **kwargs)

    def chat(self, client: httpx.Client, message: str, **fields) -> httpx.Response:
        return client.post(CHAT_PATH, json={"message": message, **fields}, headers={"X-API-Key": API_KEY})
