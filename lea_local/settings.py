"""The server's settings: one typed object read from the environment (and an optional `.env`).

Every field is documented in docs/configuration.md with its environment variable and default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

CommaList = Annotated[list[str], NoDecode]

MIN_API_KEY_LENGTH = 16
"""Shorter keys are refused: guessable, and masking one in logs would mangle ordinary text."""

PLACEHOLDER_KEYS = (
    "change-me-to-a-long-random-key",  # the README's example, once
    "changeme",
    "change-me",
    "change_me",
    "your-key",
    "your-api-key",
    "yourkey",
    "secret",
    "password",
    "api-key",
    "apikey",
    "example",
    "placeholder",
    "replace-me",
    "xxxxxxxx",
)
"""Keys copied from an example rather than generated: refused at start. A key is one when it
is one of these, or starts with one (case and separators aside: `Change_Me_Please_0123`)."""


def is_placeholder_key(key: str) -> bool:
    """A key that reads as a documentation placeholder, whatever its length."""
    normalised = "".join(c for c in key.lower() if c.isalnum())
    return any(
        normalised.startswith("".join(c for c in placeholder if c.isalnum())) for placeholder in PLACEHOLDER_KEYS
    )


class SettingsError(ValueError):
    """Raised when the settings cannot run a server (a missing API key, say)."""


def _usable_keys(variable: str, keys: list[SecretStr]) -> list[bytes]:
    """`keys` as bytes, or a SettingsError naming `variable` when one is short or an example."""
    if any(len(key.get_secret_value()) < MIN_API_KEY_LENGTH for key in keys):
        raise SettingsError(
            f"{variable} is too short: every key needs at least {MIN_API_KEY_LENGTH} characters "
            "(a short key is guessable). Generate one with: openssl rand -hex 32"
        )
    if any(is_placeholder_key(key.get_secret_value()) for key in keys):
        raise SettingsError(
            f"{variable} is an example key (change-me…, your-key, secret…): anyone who read "
            "the documentation has it. Generate one with: openssl rand -hex 32"
        )
    return [key.get_secret_value().encode() for key in keys]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LEA_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- security -------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("AGENT_API_KEY", "LEA_API_KEYS"),
    )
    """Accepted `X-API-Key` values. Comma-separated so that a new key can be rolled out before
    the old one is withdrawn. Required: the server refuses to start without one, or with one
    shorter than MIN_API_KEY_LENGTH characters."""
    admin_api_key: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Keys for writing the knowledge base (`POST`/`PUT`/`DELETE` under /api/knowledge), comma-
    separated for rotation. Set: only they may write there, AGENT_API_KEY only reads; they are
    accepted wherever AGENT_API_KEY is too (the console, typed by an admin). Unset: any
    AGENT_API_KEY writes, as before."""
    metrics_require_key: bool = False
    """Put /metrics and the OpenAPI pages (/schema…) behind the API key too. Off: they are open
    (they list no conversation, but say what the server runs and how busy it is)."""

    # --- HTTP -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_base_url: str | None = None
    """Absolute base URL used to build `assistant_audio_url` (e.g. `https://lea.agence.fr`).
    Unset: the base URL of the request itself (behind a proxy on 127.0.0.1: its Host and
    X-Forwarded-Proto, which uvicorn trusts from FORWARDED_ALLOW_IPS)."""
    cors_origins: CommaList = Field(default_factory=list)
    """Origins allowed to call the API from a browser (ImmoAssist's). Empty: CORS off."""
    chat_timeout_seconds: float = Field(default=55.0, gt=0)
    """Time budget of a text turn (ImmoAssist waits 60 s). A turn that cannot finish within it,
    given the work queued ahead, is refused at once (503 + Retry-After); one still running at
    the end is stopped and answered 504."""
    voice_timeout_seconds: float = Field(default=85.0, gt=0)
    """Time budget of a voice turn (ImmoAssist waits 90 s), upload decoding included."""
    request_timeout_seconds: float | None = Field(default=None, gt=0)
    """When set, overrides both budgets above (kept for existing configurations)."""
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM, seconds the requests under way have to finish; those still running are then stopped and get 503."""
    max_message_chars: int = Field(default=4000, ge=1)
    """Longest accepted chat message, in characters; longer gets 400."""

    # --- realtime sessions (/v1/realtime) ---------------------------------------------------
    realtime_max_sessions: int = Field(default=4, ge=0)
    """Realtime websockets open at once; one more is refused at its handshake (503 +
    Retry-After). 0: the endpoint refuses every session."""
    realtime_max_session_seconds: float = Field(default=1800.0, gt=0)
    """Longest realtime session; then an `error` event (`session_expired`) and close code 1008."""
    realtime_idle_seconds: float = Field(default=300.0, gt=0)
    """A realtime session with no client event and nothing under way for this long is closed
    (`idle_timeout` error, close code 1008)."""
    realtime_max_buffer_seconds: float = Field(default=60.0, gt=0)
    """Most audio a session's input buffer holds uncommitted; an append beyond gets an `error`
    event (`input_audio_buffer_too_large`) and is dropped."""
    realtime_max_event_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest client event, in bytes; a larger one gets an `error` event (`event_too_large`).
    At most 16 MiB, uvicorn's own websocket message limit."""

    # --- market -----------------------------------------------------------------------------
    locale: Literal["fr-CA", "fr-FR"] = "fr-CA"
    """`fr-CA`: Léa assists Québec brokers (OACIQ forms, prices in $); `fr-FR`: an agency in
    France. Chooses the system prompt, how numbers and symbols are read aloud, and the speech
    recogniser's default vocabulary."""

    # --- models ---------------------------------------------------------------------------
    models_dir: Path = Path("models")
    preset: str = "auto"
    """Catalog preset whose models the server loads: `tiny`, `cpu`, `workstation` or `auto`
    (workstation with an NVIDIA GPU, else cpu; tiny, with a warning, when those are missing)."""

    # --- LLM ------------------------------------------------------------------------------
    llm_model: Path | None = None
    """A GGUF file to load instead of the preset's (absolute, or relative to `models_dir`); with
    `llm_url`, the remote server's model name (unset: the first one its /v1/models lists)."""
    llm_url: str | None = None
    """An OpenAI-compatible server (llama-server, vLLM, llama-cpp-python's server, another lea-local…)
    that answers in place of a local LLM, e.g. `http://gpu-box:8080/v1`. Unset: the local GGUF."""
    llm_api_key: SecretStr | None = None
    """Bearer key sent to `llm_url`, if its server wants one."""
    llm_parallel: int = Field(default=1, ge=1, le=64)
    """Requests sent to the remote LLM at once (its parallel slots, e.g. llama-server's `-np`)."""
    llm_context_size: int = Field(default=4096, ge=256)
    """Context window in tokens; the conversation history is trimmed to fit it."""
    llm_gpu_layers: int | None = None
    """Layers offloaded to the GPU. Unset: all when llama-cpp-python has GPU offload, else 0.
    -1 also means all."""
    llm_threads: int | None = Field(default=None, ge=1)
    """CPU threads for generation, at most. Unset: the physical cores this process may use
    (affinity and cgroup CPU quota counted)."""
    llm_threads_adaptive: bool = True
    """Use one thread fewer per CPU other processes keep busy (sampled every half second), so that
    generation slows in proportion beside a database or a second replica instead of collapsing
    (llama.cpp's threads spin-wait for each other). false: always `llm_threads`."""
    llm_max_reply_tokens: int = Field(default=256, ge=1)
    """Longest reply, in tokens (ImmoAssist's own LEA_MAX_TOKENS is 256)."""
    llm_max_completion_tokens: int = Field(default=1024, ge=1)
    """Ceiling on a /v1/chat/completions request's `max_tokens`: one client cannot hold the shared
    LLM for minutes (the reply ends with finish_reason "length")."""
    llm_temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    llm_repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0)
    """llama.cpp's repetition penalty (1.0: off). Small models loop without one."""
    llm_prompt_cache_mb: int = Field(default=1024, ge=0)
    """RAM kept for the evaluated state of recent conversations (0: only the last prompt).
    A state costs about (conversation tokens × the model's KV bytes per token)."""
    llm_queue_size: int = Field(default=16, ge=0)
    """Requests that may wait for the LLM while it answers another; beyond: 503 + Retry-After."""
    system_prompt_file: Path | None = None
    """Léa's system prompt. Unset: the locale's prompt shipped in `lea_local/llm/`."""

    # --- speech recognition ---------------------------------------------------------------
    asr_engine: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    asr_model: Path | None = None
    """A faster-whisper model directory, or an openai-whisper `.pt`, instead of the preset's; with
    `asr_url`, the remote server's model name (unset: `whisper-1`)."""
    asr_url: str | None = None
    """An OpenAI-compatible server whose /v1/audio/transcriptions recognises speech in place of a
    local Whisper (another lea-local, speaches…). Unset: the local model."""
    asr_api_key: SecretStr | None = None
    """Bearer key sent to `asr_url`, if its server wants one."""
    asr_language: str = "fr"
    """Spoken language (ISO code), or `auto` to detect it."""
    asr_device: Literal["auto", "cpu", "cuda"] = "auto"
    asr_compute_type: str | None = None
    """faster-whisper precision. Unset: int8 on CPU, int8_float16 on CUDA."""
    asr_beam_size: int = Field(default=1, ge=1, le=10)
    """1 is greedy decoding (fastest); 5 is Whisper's default beam search."""
    asr_initial_prompt: str | None = None
    """Vocabulary hint for Whisper: place and street names, agency jargon. Unset: the locale's
    default vocabulary; an empty string: none."""
    asr_threads: int = Field(default=0, ge=0)
    """CPU threads for ASR (0: the machine's physical cores)."""
    asr_queue_size: int = Field(default=16, ge=0)
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    """Largest accepted recording, in bytes; larger gets 413."""
    max_audio_seconds: float = Field(default=120.0, gt=0)
    """Longest accepted recording; longer gets 413."""
    decode_timeout_seconds: float = Field(default=30.0, gt=0)

    # --- speech synthesis -----------------------------------------------------------------
    tts_voice: Path | None = None
    """A Piper voice (.onnx, with its .onnx.json beside it) instead of the preset's; with `tts_url`,
    the remote server's voice name (unset: `alloy`, which a remote lea-local speaks with its own voice)."""
    tts_url: str | None = None
    """An OpenAI-compatible server whose /v1/audio/speech speaks in place of a local Piper voice
    (another lea-local, speaches…). Unset: the local voice."""
    tts_api_key: SecretStr | None = None
    """Bearer key sent to `tts_url`, if its server wants one."""
    remote_wait_seconds: float = Field(default=120.0, ge=0)
    """How long startup waits for a remote engine server that is not answering yet (still loading)."""
    engines_only: bool = False
    """Serve only the OpenAI-compatible API (/v1) and health, ready and metrics: an engine server
    for other lea-local replicas (`lea-local serve --engines-only`). No agent routes."""
    tts_format: Literal["mp3", "ogg", "wav"] = "mp3"
    tts_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    """How long generated audio stays downloadable; a sweeper deletes it afterwards."""
    tts_for_text_chat: bool = False
    """Also synthesise speech for text chat (off: `assistant_audio_url` is null there)."""
    tts_voice_aliases: dict[str, str] = {}
    """/v1/audio/speech: voice names (OpenAI's or any) → an installed Piper voice, as JSON, e.g.
    `{"onyx": "fr_FR-tom-medium"}`. OpenAI's voice names not listed speak with `tts_voice`."""
    tts_use_cuda: bool = False
    """Run Piper on the GPU (short sentences are often slower there than on the CPU)."""
    tts_queue_size: int = Field(default=16, ge=0)
    tts_overlap: Literal["auto", "during_generation", "after_reply"] = "auto"
    """When speech synthesis starts: `during_generation` (each sentence as soon as the LLM has
    written it) or `after_reply`. `auto`: during generation when the LLM runs on a GPU, after
    the reply on a CPU-only machine (there both would fight over the same cores)."""
    tts_stream_timeout_seconds: float = Field(default=30.0, gt=0)
    """A GET on audio still being synthesised fails (500) after this long without progress
    while synthesising (waiting for the CPU, held by another engine, does not count). A Range or
    HEAD request on such audio waits for it to be complete, under the same rule."""

    engines_share_cpu: bool | None = None
    """Run the LLM, ASR and TTS one at a time, each with every core. Unset: yes when no
    engine runs on a GPU. Measured on 2 cores: engines computing side by side spin-wait on
    each other and a 200-turn load took 2.7× longer."""

    # --- storage --------------------------------------------------------------------------
    data_dir: Path = Path("data")
    audio_dir: Path | None = None
    """Generated speech (/media/tts/). Unset: `<data_dir>/tts`. Replicas share one (a disk or NFS)."""
    audio_store: Literal["directory", "database"] = "directory"
    """Where generated speech lives: `directory` (LEA_AUDIO_DIR), or `database` (the conversation
    database: for small deployments whose replicas share a database but no disk)."""
    database_url: str | None = None
    """SQLAlchemy URL of the conversation database. Unset: `sqlite:///<data_dir>/lea.sqlite3`."""
    database_wait_seconds: float = Field(default=120.0, ge=0)
    """How long startup waits for a database server that cannot be reached yet (PostgreSQL starting)."""

    retention_days: int = Field(default=0, ge=0)
    """Conversations (and their audio) untouched for this many days are purged, hourly.
    0: kept until erased through the API."""

    # --- knowledge base -------------------------------------------------------------------
    knowledge_dir: Path | None = None
    """The agency's documents Léa answers from (lea_local/knowledge). Unset: `<data_dir>/knowledge`.
    Replicas that share a PostgreSQL database must share this directory too: a replica whose
    directory is not the database's refuses to start (lea_local/knowledge/directory.py)."""
    knowledge_thesaurus: Path | None = None
    """The agency's own vocabulary, added to the shipped real-estate thesaurus: lines `a, b, c`
    (said for one another) or `a, b => c` (a question with a or b also looks for c), as in
    lea_local/knowledge/thesaurus-fr.txt. Read again when it changes, no reindex. Unset:
    `.thesaurus.txt` in the knowledge directory (shared by replicas like the documents; a hidden
    name, so that it is never taken for a document), when it exists."""
    knowledge_enabled: bool = True
    """Search the knowledge base on each turn and give Léa the best passages. false: no retrieval."""
    knowledge_passages: int = Field(default=3, ge=1, le=20)
    """At most this many passages go into a turn's prompt."""
    knowledge_max_prompt_tokens: int = Field(default=700, ge=50)
    """Budget, in tokens, of the passages (with their sources) put into a turn's prompt."""
    knowledge_max_upload_bytes: int = Field(default=20_000_000, ge=1)
    """Largest document accepted by the admin API (413 above)."""
    knowledge_max_pages: int = Field(default=1_000, ge=1)
    """Most pages a PDF may have (refused above, 413, before its text is read): the long end of
    an agency's documents (a procedures manual, a law with its regulations); 1,000 pages take
    about 50 minutes to encode on 2 cores, near the hour a request may last behind nginx."""
    knowledge_max_passages: int = Field(default=5_000, ge=1)
    """Most passages one document may be cut into (refused above, 413): each is encoded when it
    is added (with `dense`, up to about half a second each on 2 cores), so about 40 minutes."""
    knowledge_max_chars: int = Field(default=4_000_000, ge=1_000)
    """Most characters of text one document may hold (refused above, 413, naming this setting):
    1,000 pages of dense French prose (about 4,000 characters a page), the page cap's worth."""
    knowledge_max_docx_xml_bytes: int = Field(default=50_000_000, ge=1_000_000)
    """Most bytes a DOCX's XML parts may inflate to (refused above, before parsing): Word writes
    about 10 bytes of XML a character of text, so a document at the character cap, plus its
    styles (about 1 MB)."""
    knowledge_max_extract_memory_bytes: int = Field(default=1_000_000_000, ge=200_000_000)
    """Address space of the child process that reads a document (RLIMIT_AS, the parsing
    libraries included; refused above): the server's own memory never holds the parse."""
    knowledge_max_extract_seconds: int = Field(default=120, ge=1)
    """CPU seconds the child process that reads a document may spend (RLIMIT_CPU; refused above);
    it is also stopped after three times as long plus 10 s of wall-clock time."""
    knowledge_retrieval: Literal["dense", "words", "lexical"] = "dense"
    """How passages are found beside their words (lea_local/knowledge/fusion.py): `dense`, a
    multilingual sentence encoder (multilingual-e5-small; encodes each document when it is added);
    `words`, French word vectors (lighter, finds fewer paraphrases); `lexical`, words only."""
    embedding_url: str | None = None
    """An OpenAI-compatible server whose /v1/embeddings encodes passages and questions for `dense`
    retrieval in place of the bundled multilingual-e5-small (llama-server `--embedding`, vLLM,
    text-embeddings-inference…), e.g. `http://gpu-box:8081/v1`. Needs `embedding_model`."""
    embedding_model: str | None = None
    """The remote encoder's model name, sent with each request and stored with each vector:
    changing it means `lea-local knowledge reindex`."""
    embedding_api_key: SecretStr | None = None
    """Bearer key sent to `embedding_url`, if its server wants one."""
    embedding_query_prefix: str = ""
    """Put before each question, for models trained with one (e5: `query: `; bge-m3: none)."""
    embedding_passage_prefix: str = ""
    """Put before each passage, for models trained with one (e5: `passage: `)."""
    embedding_close_similarity: float | None = Field(default=None, ge=-1.0, le=1.0)
    """The cosine from which the remote model's passage is close enough in meaning to go into the
    prompt without sharing words with the question (scripts/eval_knowledge_retrieval.py suggests
    one). Unset: passages are kept by their words only."""

    # --- logging --------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_content: bool = False
    """Log message texts and the prompt sent to the model. Off by default: they are personal."""

    @field_validator("api_keys", "admin_api_key", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        for name, url in (("llm_model", self.llm_url), ("asr_model", self.asr_url), ("tts_voice", self.tts_url)):
            path = getattr(self, name)
            if path is not None and url is None and not path.is_absolute():
                setattr(self, name, self.models_dir / path)
        return self

    @model_validator(mode="after")
    def _embedding_needs_model(self) -> Settings:
        if self.embedding_url is not None and not self.embedding_model:
            raise ValueError("LEA_EMBEDDING_URL needs LEA_EMBEDDING_MODEL: the model's name is stored with its vectors")
        return self

    def turn_timeout(self, kind: Literal["chat", "voice"]) -> float:
        """The time budget of a text or voice turn, in seconds."""
        if self.request_timeout_seconds is not None:
            return self.request_timeout_seconds
        return self.chat_timeout_seconds if kind == "chat" else self.voice_timeout_seconds

    @property
    def effective_audio_dir(self) -> Path:
        return self.audio_dir or self.data_dir / "tts"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'lea.sqlite3'}"

    @property
    def effective_knowledge_dir(self) -> Path:
        return self.knowledge_dir or self.data_dir / "knowledge"

    @property
    def effective_knowledge_thesaurus(self) -> Path:
        return self.knowledge_thesaurus or self.effective_knowledge_dir / ".thesaurus.txt"

    def require_api_keys(self) -> list[bytes]:
        """The accepted keys as bytes, or a SettingsError that says how to set one."""
        if not self.api_keys:
            raise SettingsError(
                "AGENT_API_KEY is not set: the server refuses to start without an API key. "
                "Set AGENT_API_KEY to the key ImmoAssist sends in X-API-Key "
                "(several keys may be given, comma-separated, for rotation)."
            )
        return _usable_keys("AGENT_API_KEY", self.api_keys)

    def require_admin_keys(self) -> list[bytes]:
        """The knowledge base's admin keys as bytes (none: not set), or a SettingsError."""
        return _usable_keys("LEA_ADMIN_API_KEY", self.admin_api_key)
