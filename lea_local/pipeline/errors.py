"""The errors the turns raise themselves. A turn also lets through, as they are, the errors of
the layers it calls, each answered by its own status (`lea_local.api.errors`): `PromptTooLong`
(llm), `NoSpeech` and `AudioRejected` (asr), `ConversationNotFound` and `StoreUnavailable`
(store), `QueueFull` and `GenerationCancelled` (runtime)."""

from __future__ import annotations


class EngineFailure(Exception):
    """An engine raised: the turn fails with 500 and stores nothing."""

    def __init__(self, engine: str) -> None:
        super().__init__(f"The {engine} failed to process the request")


class ContextLengthExceeded(Exception):
    """The messages leave no room for a reply in the model's context window."""
