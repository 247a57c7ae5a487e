"""Queued knowledge writes must not hold the threads the turns need (issue 25, item 1): while one
upload is being written, a burst of further uploads is answered at once (503 + Retry-After,
nothing stored), and a chat turn and the documents list sent meanwhile answer 200.

The upload is held in its write deterministically: the server's sentence encoder is a fake
/v1/embeddings server of the test's own that answers questions at once but holds every passage
request until the test lets it go. No verdict depends on the clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.server import API_KEY, LeaServer
from tests.waiting import wait_for

HEADERS = {"X-API-Key": API_KEY}
DOCUMENTS = "/api/knowledge/documents"
BURST = 40
SLOW_DOCUMENT = "# Guide\n\n## Clés\n\nLes clés de l'agence sont au coffre du bureau de Lévis.\n"


class HoldingEmbeddings:
    """A /v1/embeddings server: questions answered at once, passages held until `release()`."""

    def __init__(self) -> None:
        self.passages_asked = threading.Event()
        self.released = threading.Event()
        holder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body.get("input_type") == "passage":
                    holder.passages_asked.set()
                    holder.released.wait(300)
                data = [{"index": i, "embedding": [1.0, float(len(t) % 7), 0.5]} for i, t in enumerate(body["input"])]
                answer = json.dumps({"data": data, "model": body.get("model")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def embeddings() -> Iterator[HoldingEmbeddings]:
    server = HoldingEmbeddings()
    yield server
    server.close()


@pytest.fixture
def lea(tmp_path: Path, models_dir: Path, embeddings: HoldingEmbeddings) -> Iterator[LeaServer]:
    server = LeaServer(
        tmp_path / "data",
        models_dir,
        {
            "LEA_EMBEDDING_URL": embeddings.url,
            "LEA_EMBEDDING_MODEL": "holding-test-encoder",
            "LEA_LLM_MAX_REPLY_TOKENS": "8",
        },
    )
    server.start()
    yield server
    embeddings.release()
    server.stop()


def upload(client: httpx.Client, name: str, content: bytes) -> httpx.Response:
    return client.post(DOCUMENTS, files={"file": (name, content, "text/markdown")})


@pytest.mark.slow
def test_a_burst_of_uploads_behind_a_slow_one_is_refused_at_once_and_turns_go_on(lea, embeddings):
    with lea.client(headers=HEADERS, timeout=90) as client, ThreadPoolExecutor(max_workers=BURST + 2) as pool:
        slow = pool.submit(upload, client, "guide.md", SLOW_DOCUMENT.encode())
        # The slow upload is in its write: its passages are being encoded (and held there).
        wait_for(
            embeddings.passages_asked.is_set,
            "the slow upload encodes its passages",
            while_possible=lambda: not slow.done(),
        )
        assert not slow.done()

        burst = [
            pool.submit(upload, client, f"note-{i}.md", f"# Note {i}\n\nLe dossier {i} est complet.\n".encode())
            for i in range(BURST)
        ]
        # The server lets one more write wait for the slot: every other upload is answered now.
        answered = []
        for future in as_completed(burst):
            answered.append(future)
            if len(answered) == BURST - 1:
                break
        # All answered while the slow upload still holds the write slot (the encoder holds it).
        assert not slow.done() and not embeddings.released.is_set()
        waiting = [future for future in burst if future not in answered]
        for future in answered:
            r = future.result()
            assert r.status_code == 503, r.text
            body = r.json()
            assert set(body) == {"success", "error", "detail"} and body["success"] is False
            assert body["error"] == body["detail"] and body["error"].strip()
            assert int(r.headers["Retry-After"]) > 0

        # The documents list and a chat turn answer meanwhile.
        listed = client.get(DOCUMENTS)
        assert listed.status_code == 200, listed.text
        assert listed.json()["documents"] == []
        turn = lea.chat(client, "Où sont les clés de l'agence ?")
        assert turn.status_code == 200, turn.text
        assert not slow.done()

        embeddings.release()
        assert slow.result().status_code == 201, slow.result().text
        for future in waiting:  # it had the slot after the slow one
            assert future.result().status_code in (201, 503), future.result().text
        stored = {d["file_name"] for d in client.get(DOCUMENTS).json()["documents"]}
        refused = {f"note-{i}.md" for i, future in enumerate(burst) if future.result().status_code == 503}
        assert len(refused) >= BURST - 1
        assert "guide.md" in stored and not (stored & refused)
        assert not (refused & {p.name for p in (lea.data_dir / "knowledge").iterdir()})
