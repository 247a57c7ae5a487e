"""Everything that lives as long as the server: engines, stores, queues. Built once at
startup from the settings, handed to routes by dependency injection."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import SecretStr

from lea_local.asr.base import SpeechRecognizer
from lea_local.catalog import Catalog, load_catalog, resolve_installed_preset
from lea_local.knowledge import KnowledgeBase
from lea_local.knowledge.grounding import TurnGrounding
from lea_local.knowledge.library import knowledge_base_for
from lea_local.llm.base import ChatEngine
from lea_local.locales import asr_vocabulary, system_prompt_path
from lea_local.pipeline.agent import AgentTurns
from lea_local.pipeline.turns import ChatTurns
from lea_local.pipeline.voice import VoiceTurns
from lea_local.runtime.cpu_share import shared_cpu_share
from lea_local.runtime.hardware import physical_cores
from lea_local.runtime.inference_queue import InferenceQueue, QueueFull, Slot
from lea_local.runtime.remote_http import loggable_url
from lea_local.settings import Settings
from lea_local.store.conversations import ConversationStore
from lea_local.tts.audio_store import TtsAudioStore
from lea_local.tts.base import SpeechSynthesizer
from lea_local.tts.database_audio_store import DatabaseAudioStore
from lea_local.tts.speech import SpeechService
from lea_local.tts.voices import VoiceRegistry, installed_piper_voices

log = logging.getLogger(__name__)

# A reply of 2 to 4 sentences is synthesised in about this many jobs (one per sentence, the
# first sentence's first phrase apart).
SPEECH_JOBS_PER_REPLY = 4.0


@dataclass
class ModelPaths:
    """The local models to load; None for an engine answered by a remote server (its URL is set)."""

    preset: str | None
    llm: Path | None
    asr: Path | None
    tts: Path | None


@dataclass
class Services:
    settings: Settings
    store: ConversationStore
    chat_engine: ChatEngine
    llm_queue: InferenceQueue
    turns: ChatTurns
    recognizer: SpeechRecognizer | None = None
    voice: VoiceTurns | None = None
    speech: SpeechService | None = None
    voices: VoiceRegistry | None = None
    """The voices /v1/audio/speech speaks with (the speech service's, and other installed ones)."""
    knowledge: KnowledgeBase | None = None
    """The agency's documents (the admin API's); None on an engine server, which has no turns."""
    agent: AgentTurns = field(init=False)
    """The agent's turns, whole (its routes' one call): the turns, voice and speech above, joined."""

    def __post_init__(self) -> None:
        self.agent = AgentTurns(
            turns=self.turns,
            voice=self.voice,
            speech=self.speech,
            speak_text_turns=self.settings.tts_for_text_chat,
        )

    def queues(self) -> list[InferenceQueue]:
        found = [self.llm_queue]
        if self.voice is not None:
            found += [self.voice.decode_queue, self.voice.asr_queue]
        if self.speech is not None:
            found.append(self.speech.queue)
        return found

    def turn_stages(self, kind: Literal["chat", "voice"]) -> list[tuple[InferenceQueue, float]]:
        """The engine jobs a text or voice turn will need, for its admission against its budget.
        Its speech is counted too: it runs after the answer but on the same cores."""
        stages: list[tuple[InferenceQueue, float]] = [(self.llm_queue, 1.0)]
        if kind == "voice" and self.voice is not None:
            stages += [(self.voice.decode_queue, 1.0), (self.voice.asr_queue, 1.0)]
        if self.speech is not None and (kind == "voice" or self.settings.tts_for_text_chat):
            stages.append((self.speech.queue, SPEECH_JOBS_PER_REPLY))
        return stages

    def model_names(self) -> dict[str, str]:
        names = {"llm": self.chat_engine.model_name}
        if self.recognizer is not None:
            names["asr"] = self.recognizer.model_name
        if self.speech is not None:
            names["tts"] = self.speech.synthesizer.voice_name
        return names

    def warm_up(self) -> None:
        """One small inference per engine, in parallel, so that the first user does not pay
        for lazy initialisation (kernels, caches, VAD model)."""
        from lea_local.asr.base import NoSpeech
        from lea_local.llm.base import ChatMessage

        def warm_llm() -> None:
            # Behind the system prompt every turn starts with: llama.cpp keeps its evaluation, so
            # the first turn evaluates only its own words (on 2 cores, 2.5 s less for the first).
            system = self.turns.system_prompt
            try:
                self.chat_engine.generate([system, ChatMessage("user", "Bonjour")], max_tokens=1, temperature=0.0)
                # A first estimate of a turn's cost for admission, before any real turn is measured:
                # a full-length reply at the measured speed (real turns then refine it).
                started = time.perf_counter()
                reply = self.chat_engine.generate(
                    [system, ChatMessage("user", "Bonjour, présentez-vous.")], max_tokens=16, temperature=0.0
                )
            except QueueFull as exc:
                # A remote engine refusing (503: busy with other replicas' turns) is no failure of
                # this replica: its first real turns measure the speed instead.
                log.warning("the language model was not warmed up: %s", exc)
                return
            per_token = (time.perf_counter() - started) / max(1, reply.completion_tokens)
            self.llm_queue.service.seed(per_token * self.settings.llm_max_reply_tokens)

        def warm_asr() -> None:
            assert self.recognizer is not None
            # Half a second of a tone: enough to run the VAD and the encoder once.
            tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(8_000) / 16_000)
            try:
                self.recognizer.transcribe(tone.astype(np.float32))
            except NoSpeech:
                pass

        def warm_tts() -> None:
            assert self.speech is not None
            for _ in self.speech.synthesizer.synthesize("Bonjour."):
                pass
            started = time.perf_counter()
            for _ in self.speech.synthesizer.synthesize("Bonjour, je suis Léa, votre assistante."):
                pass
            self.speech.queue.service.seed(time.perf_counter() - started)

        def warm_knowledge() -> None:
            assert self.knowledge is not None
            # Loads the semantic retriever and builds the passages' cache (seconds for a large corpus).
            self.knowledge.search("bonjour", 1)

        jobs = [warm_llm] + ([warm_asr] if self.recognizer else []) + ([warm_tts] if self.speech else [])
        jobs += [warm_knowledge] if self.knowledge is not None and self.settings.knowledge_enabled else []
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="warm-up") as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()

    def close(self) -> None:
        self.store.close()
        for engine in (self.chat_engine, self.recognizer, self.speech.synthesizer if self.speech else None):
            if engine is not None:
                engine.close()  # a remote engine's HTTP connections


def preset_model_path(catalog: Catalog, preset: str | None, models_dir: Path, kind: str, engine: str) -> Path:
    """The file (or directory) the `engine` of `kind` loads from `preset`'s installed models."""
    assert preset is not None
    entry = catalog.preset_model(preset, kind, engine)  # type: ignore[arg-type]
    if not entry.is_installed(models_dir):
        from lea_local.catalog import ModelsNotInstalled

        raise ModelsNotInstalled(
            f"{entry.id} ({engine}) is not installed. "
            f"Run: lea-local models --model {entry.id} --models-dir {models_dir}"
        )
    if kind == "llm":
        return entry.path_of(models_dir, next(f.name for f in entry.files if f.name.endswith(".gguf")))
    if kind == "tts":
        return entry.path_of(models_dir, next(f.name for f in entry.files if f.name.endswith(".onnx")))
    if engine == "openai-whisper":
        return entry.path_of(models_dir, next(f.name for f in entry.files if f.name.endswith(".pt")))
    return entry.directory(models_dir)


def resolve_model_paths(settings: Settings, catalog: Catalog | None = None) -> ModelPaths:
    """Explicit model paths from the settings win; the rest comes from the preset. An engine with a
    URL (`LEA_LLM_URL`…) needs no local model: a process whose three engines are remote loads none."""
    catalog = catalog or load_catalog()
    local = {
        "llm": (settings.llm_url is None, settings.llm_model, "llama-cpp"),
        "asr": (settings.asr_url is None, settings.asr_model, settings.asr_engine),
        "tts": (settings.tts_url is None, settings.tts_voice, "piper"),
    }
    preset: str | None = None
    if any(is_local and path is None for is_local, path, _ in local.values()):
        preset = resolve_installed_preset(catalog, settings.preset, settings.models_dir)

    def resolved(kind: str) -> Path | None:
        is_local, path, engine = local[kind]
        if not is_local:
            return None
        return path or preset_model_path(catalog, preset, settings.models_dir, kind, engine)

    return ModelPaths(preset=preset, llm=resolved("llm"), asr=resolved("asr"), tts=resolved("tts"))


def read_system_prompt(settings: Settings) -> str:
    path = settings.system_prompt_file or system_prompt_path(settings.locale)
    return path.read_text(encoding="utf-8").strip()


def _secret(key: SecretStr | None) -> str | None:
    return key.get_secret_value() if key is not None else None


def build_chat_engine(settings: Settings, path: Path | None) -> ChatEngine:
    """The remote engine when `llm_url` is set, else the GGUF at `path` in this process."""
    if settings.llm_url is not None:
        from lea_local.llm.remote_engine import RemoteChatEngine

        return RemoteChatEngine(
            settings.llm_url,
            api_key=_secret(settings.llm_api_key),
            model=str(settings.llm_model) if settings.llm_model is not None else None,
            # The server's own window unless LEA_LLM_CONTEXT_SIZE is set explicitly.
            context_size=settings.llm_context_size if "llm_context_size" in settings.model_fields_set else None,
            default_context_size=settings.llm_context_size,
            repeat_penalty=settings.llm_repeat_penalty,
            wait_seconds=settings.remote_wait_seconds,
        )
    from lea_local.llm.llama_cpp_engine import LlamaCppChatEngine

    assert path is not None
    return LlamaCppChatEngine(
        path,
        context_size=settings.llm_context_size,
        gpu_layers=settings.llm_gpu_layers,
        threads=settings.llm_threads or physical_cores(),
        prompt_cache_bytes=settings.llm_prompt_cache_mb * 1024 * 1024,
        repeat_penalty=settings.llm_repeat_penalty,
        cpu_share=shared_cpu_share() if settings.llm_threads_adaptive else None,
    )


def build_synthesizer(settings: Settings, path: Path | None) -> SpeechSynthesizer:
    """The remote synthesiser when `tts_url` is set, else the Piper voice at `path`."""
    if settings.tts_url is not None:
        from lea_local.tts.remote_engine import RemoteSpeechSynthesizer

        return RemoteSpeechSynthesizer(
            settings.tts_url,
            api_key=_secret(settings.tts_api_key),
            voice=str(settings.tts_voice) if settings.tts_voice is not None else None,
            wait_seconds=settings.remote_wait_seconds,
        )
    from lea_local.tts.piper_engine import PiperSynthesizer

    assert path is not None
    return PiperSynthesizer(path, use_cuda=settings.tts_use_cuda)


def build_recognizer(settings: Settings, path: Path | None) -> SpeechRecognizer:
    language = None if settings.asr_language == "auto" else settings.asr_language
    if settings.asr_url is not None:
        from lea_local.asr.remote_engine import RemoteSpeechRecognizer

        return RemoteSpeechRecognizer(
            settings.asr_url,
            api_key=_secret(settings.asr_api_key),
            model=str(settings.asr_model) if settings.asr_model is not None else None,
            language=language,
            initial_prompt=asr_vocabulary(settings.locale, settings.asr_initial_prompt),
            wait_seconds=settings.remote_wait_seconds,
        )
    assert path is not None
    common = dict(
        device=settings.asr_device,
        language=language,
        beam_size=settings.asr_beam_size,
        initial_prompt=asr_vocabulary(settings.locale, settings.asr_initial_prompt),
        threads=settings.asr_threads or physical_cores(),
    )
    if settings.asr_engine == "openai-whisper":
        from lea_local.asr.openai_whisper_engine import OpenAIWhisperRecognizer

        return OpenAIWhisperRecognizer(path, **common)  # type: ignore[arg-type]
    from lea_local.asr.faster_whisper_engine import FasterWhisperRecognizer

    return FasterWhisperRecognizer(path, compute_type=settings.asr_compute_type, **common)  # type: ignore[arg-type]


def overlap_generation(settings: Settings, engine: ChatEngine) -> bool:
    """Whether speech starts while the LLM still writes (see `Settings.tts_overlap`)."""
    if settings.tts_overlap != "auto":
        return settings.tts_overlap == "during_generation"
    # Measured on a 2-core CPU: overlapping slows the LLM by more than speech gains. A remote
    # LLM computes elsewhere: nothing to fight over.
    return (engine.on_gpu or engine.remote) and not settings.tts_use_cuda


def _knowledge_retrieval(settings: Settings) -> str:
    """How passages are found, for the start-up log: `dense` names its encoder's server."""
    if settings.knowledge_retrieval == "dense" and settings.embedding_url:
        return f"dense: {settings.embedding_model} at {loggable_url(settings.embedding_url)}"
    return settings.knowledge_retrieval


def build_services(settings: Settings) -> Services:
    from lea_local.tts.piper_engine import PiperSynthesizer

    paths = resolve_model_paths(settings)
    log.info(
        "loading models",
        extra={
            "preset": paths.preset,
            # A remote engine is named by its server's URL, without any user:password in it.
            "llm": loggable_url(settings.llm_url) if settings.llm_url else str(paths.llm),
            "asr": loggable_url(settings.asr_url) if settings.asr_url else str(paths.asr),
            "tts": loggable_url(settings.tts_url) if settings.tts_url else str(paths.tts),
            "knowledge": _knowledge_retrieval(settings),
        },
    )
    store = ConversationStore.from_url(settings.effective_database_url, settings.database_wait_seconds)
    # In the conversation database, whose migrations (run by the store) made its tables.
    knowledge = None if settings.engines_only else knowledge_base_for(settings, store.engine)
    # The three models load in parallel: their loading is mostly file reads and native code.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="load") as pool:
        llm_loading = pool.submit(build_chat_engine, settings, paths.llm)
        asr_loading = pool.submit(build_recognizer, settings, paths.asr)
        tts_loading = pool.submit(build_synthesizer, settings, paths.tts)
        engine, recognizer, synthesizer = llm_loading.result(), asr_loading.result(), tts_loading.result()
    log.info(
        "models loaded",
        extra={
            "llm": engine.model_name,
            "context": engine.context_size,
            "gpu_layers": engine.gpu_layers,
            "provider": engine.provider,
            "asr": recognizer.model_name,
            "tts": synthesizer.voice_name,
        },
    )
    share = settings.engines_share_cpu
    if share is None:
        share = not (engine.on_gpu or recognizer.on_gpu or settings.tts_use_cuda)
    cpu = Slot(1) if share else None

    def local_slot(component: ChatEngine | SpeechRecognizer | SpeechSynthesizer) -> Slot | None:
        """The shared CPU slot for an engine computing here; a remote one has its own."""
        return None if component.remote else cpu

    overlap = overlap_generation(settings, engine)
    llm_queue = InferenceQueue(
        "language model",
        max_waiting=settings.llm_queue_size,
        slot=local_slot(engine),
        concurrency=settings.llm_parallel if engine.remote else 1,
        stage="llm",
    )
    turns = ChatTurns(
        engine=engine,
        store=store,
        llm_queue=llm_queue,
        system_prompt=read_system_prompt(settings),
        max_reply_tokens=settings.llm_max_reply_tokens,
        temperature=settings.llm_temperature,
        log_content=settings.log_content,
        grounding=TurnGrounding(
            knowledge,
            max_passages=settings.knowledge_passages,
            max_prompt_tokens=settings.knowledge_max_prompt_tokens,
        )
        if knowledge is not None and settings.knowledge_enabled
        else None,
    )
    # Every turn the queues can hold (decode, ASR, LLM: waiting + running) may be speaking, plus
    # a backlog of `tts_queue_size` replies still being spoken. Speech admits that many jobs (a
    # turn beyond gets 503 before any work, never a null audio URL), and their sentences wait
    # for the CPU without ever being refused.
    speech_jobs = (
        (settings.asr_queue_size + 2) + (settings.asr_queue_size + 1) + (settings.llm_queue_size + 1)
    ) + settings.tts_queue_size
    speech = SpeechService(
        synthesizer,
        DatabaseAudioStore(store.engine, settings.tts_ttl_seconds)
        if settings.audio_store == "database"
        else TtsAudioStore(settings.effective_audio_dir, settings.tts_ttl_seconds),
        # Speech that overlaps generation cannot wait for the LLM's turn on the CPU.
        InferenceQueue(
            "speech synthesis", max_waiting=speech_jobs, slot=None if overlap else local_slot(synthesizer), stage="tts"
        ),
        settings.tts_format,
        overlap_generation=overlap,
        max_jobs=speech_jobs,
        locale=settings.locale,
    )
    voices = VoiceRegistry(
        synthesizer,
        # A remote synthesiser speaks with the remote voice only (OpenAI's voice names are its aliases).
        {} if settings.tts_url else installed_piper_voices(load_catalog(), settings.models_dir),
        lambda path: PiperSynthesizer(path, use_cuda=settings.tts_use_cuda),
        {} if settings.tts_url else settings.tts_voice_aliases,
    )
    voice = VoiceTurns(
        chat=turns,
        recognizer=recognizer,
        decode_queue=InferenceQueue(
            "audio decoder", max_waiting=settings.asr_queue_size, concurrency=2, stage="decode"
        ),
        asr_queue=InferenceQueue(
            "speech recognition", max_waiting=settings.asr_queue_size, slot=local_slot(recognizer), stage="asr"
        ),
        max_audio_seconds=settings.max_audio_seconds,
        decode_timeout=settings.decode_timeout_seconds,
        temp_dir=settings.data_dir / "tmp",
        log_content=settings.log_content,
    )
    return Services(
        settings=settings,
        store=store,
        chat_engine=engine,
        llm_queue=llm_queue,
        turns=turns,
        recognizer=recognizer,
        voice=voice,
        speech=speech,
        voices=voices,
        knowledge=knowledge,
    )
