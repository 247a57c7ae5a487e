"""What the pipeline needs from a speech synthesiser. Another engine (Kokoro, XTTS…) is one new
module that satisfies `SpeechSynthesizer`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np


class SpeechSynthesizer(Protocol):
    voice_name: str
    sample_rate: int
    remote: bool
    """Computed by another server: its queue needs no local CPU."""
    on_gpu: bool
    """Computes on a GPU of this machine (False for a remote engine)."""

    def close(self) -> None:
        """Release a remote engine's HTTP connections; nothing for a local engine."""
        ...

    def synthesize(self, text: str, *, speed: float = 1.0) -> Iterator[np.ndarray]:
        """Speech for already-normalised text: mono int16 chunks, one per sentence, as soon as
        each is ready. `speed`: 2.0 speaks twice as fast as the voice's own pace (OpenAI's
        0.25–4.0). Blocking; implementations serialise calls where their engine needs it."""
        ...
