"""GET /v1/models: the models loaded here, and the OpenAI names accepted in their place.

OpenAI clients name OpenAI models ("gpt-4o-mini", "whisper-1", "tts-1-hd"). Each such name is
an alias of the local model of the same kind; answers always name the real local model."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import get
from litestar.di import NamedDependency

from lea_local.api.openai.errors import OpenAIError, openai_error_responses
from lea_local.services import Services

ModelKind = Literal["llm", "asr", "tts"]

# OpenAI's model names, by the engine that answers them here.
OPENAI_ALIASES: dict[ModelKind, tuple[str, ...]] = {
    "llm": (
        "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4-turbo", "gpt-4",
        "gpt-3.5-turbo", "gpt-5", "gpt-5-mini", "gpt-5-nano", "o3-mini", "o4-mini",
    ),
    "asr": ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"),
    "tts": ("tts-1", "tts-1-hd", "gpt-4o-mini-tts"),
}  # fmt: skip
# A fixed creation time: the same on every replica and restart (clients cache model lists).
CREATED = 1_767_225_600  # 2026-01-01


class Model(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    """The local model that answers under this name (as llama.cpp's server and vLLM report it)."""


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[Model]


def model_entries(services: Services) -> list[Model]:
    """Local models first, then every alias of a loaded kind."""
    loaded: dict[str, str] = services.model_names()
    entries = [_model(name, name) for name in loaded.values()]
    for kind, aliases in OPENAI_ALIASES.items():
        if kind in loaded:
            entries += [_model(alias, loaded[kind]) for alias in aliases]
    return entries


def _model(name: str, root: str) -> Model:
    return Model(id=name, object="model", created=CREATED, owned_by="lea-local", root=root)


def local_model(services: Services, kind: ModelKind) -> str:
    """The name an answer gives for a request of this kind, whatever model the client named."""
    return services.model_names()[kind]


@get(
    "/models",
    summary="Models served here (OpenAI-compatible)",
    sync_to_thread=False,
    responses=openai_error_responses(401, 503),
)
def list_models(services: NamedDependency[Services]) -> ModelList:
    return ModelList(object="list", data=model_entries(services))


@get(
    "/models/{model_id:str}",
    summary="One model (OpenAI-compatible)",
    sync_to_thread=False,
    responses=openai_error_responses(401, 404, 503),
)
def retrieve_model(model_id: str, services: NamedDependency[Services]) -> Model:
    for entry in model_entries(services):
        if entry.id == model_id:
            return entry
    raise OpenAIError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
