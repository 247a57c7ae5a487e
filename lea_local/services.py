"""Everything that lives as long as the server: engines, stores, queues. Built once at
startup from the settings, handed to routes by dependency injection."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lea_local.catalog import Catalog, load_catalog, resolve_installed_preset
from lea_local.inference_queue import InferenceQueue
from lea_local.llm.base import ChatEngine
from lea_local.settings import Settings
from lea_local.store.conversations import ConversationStore
from lea_local.turns import ChatTurns

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = Path(__file__).parent / "llm" / "system_prompt.fr.txt"


@dataclass
class ModelPaths:
    preset: str | None
    llm: Path


@dataclass
class Services:
    settings: Settings
    store: ConversationStore
    chat_engine: ChatEngine
    llm_queue: InferenceQueue
    turns: ChatTurns

    def model_names(self) -> dict[str, str]:
        return {"llm": self.chat_engine.model_name}

    def warm_up(self) -> None:
        """One tiny inference per engine, so that the first user does not pay for it."""
        from lea_local.llm.base import ChatMessage

        self.chat_engine.generate([ChatMessage("user", "Bonjour")], max_tokens=1, temperature=0.0)

    def close(self) -> None:
        self.store.close()


def resolve_model_paths(settings: Settings, catalog: Catalog | None = None) -> ModelPaths:
    """Explicit model paths from the settings win; the rest comes from the preset."""
    catalog = catalog or load_catalog()
    preset: str | None = None
    if settings.llm_model is None:
        preset = resolve_installed_preset(catalog, settings.preset, settings.models_dir)
    llm = settings.llm_model
    if llm is None:
        assert preset is not None
        entry = catalog.preset_model(preset, "llm")
        gguf = next(f.name for f in entry.files if f.name.endswith(".gguf"))
        llm = entry.path_of(settings.models_dir, gguf)
    return ModelPaths(preset=preset, llm=llm)


def read_system_prompt(settings: Settings) -> str:
    path = settings.system_prompt_file or DEFAULT_SYSTEM_PROMPT
    return path.read_text(encoding="utf-8").strip()


def build_services(settings: Settings) -> Services:
    from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine

    paths = resolve_model_paths(settings)
    log.info("loading models", extra={"preset": paths.preset, "llm": str(paths.llm)})
    store = ConversationStore.from_url(settings.effective_database_url)
    engine = LlamaCppChatEngine(
        paths.llm,
        context_size=settings.llm_context_size,
        gpu_layers=settings.llm_gpu_layers,
        threads=settings.llm_threads,
    )
    log.info(
        "LLM loaded",
        extra={"model": engine.model_name, "context": engine.context_size, "gpu_layers": engine.gpu_layers},
    )
    llm_queue = InferenceQueue("language model", max_waiting=settings.llm_queue_size)
    turns = ChatTurns(
        engine=engine,
        store=store,
        llm_queue=llm_queue,
        system_prompt=read_system_prompt(settings),
        max_reply_tokens=settings.llm_max_reply_tokens,
        temperature=settings.llm_temperature,
        log_content=settings.log_content,
    )
    return Services(settings=settings, store=store, chat_engine=engine, llm_queue=llm_queue, turns=turns)
