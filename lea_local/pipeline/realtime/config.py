"""A Realtime session's configuration: one internal shape, read from and written to both
dialects of the protocol. GA (the official SDKs' `client.realtime.connect`): nested `audio.input`
/ `audio.output`, `output_modalities`, formats as `{"type": "audio/pcm", "rate": 24000}`. Beta
(`OpenAI-Beta: realtime=v1`, ImmoAssist's): flat `input_audio_format`, `turn_detection`,
`input_audio_transcription`, `modalities`, formats as `"pcm16"`."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from lea_local.llm.base import ToolSpec, ToolUse
from lea_local.llm.grammar import MAX_SCHEMA_CHARS, MAX_TOOLS, SchemaRefused, check_buildable, check_name, check_schema
from lea_local.pipeline.realtime.audio import BETA_NAMES, GA_NAMES, WIRE_RATES, WireFormat

Dialect = Literal["ga", "beta"]

DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}
# `semantic_vad` is served by the same voice-activity model: a turn ends after a silence whose
# length follows the eagerness asked (OpenAI's model also judges whether the words sound finished,
# so it may answer sooner). Refusing it would refuse the rest of the client's `session.update`.
SEMANTIC_SILENCE_MS = {"low": 1500, "medium": 800, "auto": 800, "high": 500}


class ConfigError(ValueError):
    """A `session.update` or `response.create` field that cannot be used: an `error` event
    naming it (`param`)."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


@dataclass
class SessionConfig:
    model: str
    instructions: str
    language: str | None
    """The recogniser's language for this session's audio (the transcription's `language`)."""
    output_modalities: tuple[str, ...] = ("audio",)
    voice: str = "alloy"
    """Echoed back; the server speaks with its own voice (`LEA_TTS_VOICE`)."""
    speed: float = 1.0
    input_format: WireFormat = "pcm16"
    output_format: WireFormat = "pcm16"
    transcription: dict[str, Any] | None = None
    """None: no transcription events (the audio is transcribed anyway: Léa answers from it)."""
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TURN_DETECTION))
    noise_reduction: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    """Several calls in one answer allowed (with `tool_choice` auto or required)."""
    temperature: float = 0.8
    max_output_tokens: int | Literal["inf"] = "inf"


def initial_config(
    dialect: Dialect, *, model: str, instructions: str, language: str | None, temperature: float
) -> SessionConfig:
    return SessionConfig(
        model=model,
        instructions=instructions,
        language=language,
        output_modalities=("text", "audio") if dialect == "beta" else ("audio",),
        transcription={"model": "whisper-1", "language": language},
        temperature=temperature,
    )


# --- reading --------------------------------------------------------------------------------------


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"'{param}' must be an object", param, "invalid_type")
    return value


def _number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"'{param}' must be a number", param, "invalid_type")
    if not low <= value <= high:
        raise ConfigError(f"'{param}' must be between {low:g} and {high:g}, got {value}", param)
    return float(value)


def _boolean(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"'{param}' must be a boolean", param, "invalid_type")
    return value


def modalities(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise ConfigError(f"'{param}' must be a list of 'text' and 'audio'", param)
    return tuple(dict.fromkeys(value))


def max_tokens(value: Any, param: str) -> int | Literal["inf"]:
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise ConfigError(f"'{param}' must be an integer from 1 to 4096, or 'inf'", param)
    return value


def _wire_format(value: Any, param: str, dialect: Dialect) -> WireFormat:
    if dialect == "beta":
        if value not in GA_NAMES:
            raise ConfigError(f"'{param}' must be one of {', '.join(GA_NAMES)}", param)
        return value  # type: ignore[no-any-return]
    kind = _object(value, param).get("type")
    if kind not in BETA_NAMES:
        raise ConfigError(f"'{param}.type' must be one of {', '.join(BETA_NAMES)}", f"{param}.type")
    wire: WireFormat = BETA_NAMES[kind]  # type: ignore[assignment]
    rate = value.get("rate")
    if rate is not None and rate != WIRE_RATES[wire]:
        raise ConfigError(f"'{param}.rate' must be {WIRE_RATES[wire]} for {kind}", f"{param}.rate")
    return wire


def _turn_detection(value: Any, param: str, current: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _object(value, param)
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise ConfigError(
            f"'{param}.type' {kind!r} is not supported here: 'server_vad', 'semantic_vad', or null for push-to-talk",
            f"{param}.type",
            "unsupported_value",
        )
    # An update keeps the fields it does not name, unless it changes the kind of detection.
    merged = dict(current) if current is not None and current["type"] == kind else dict(DEFAULT_TURN_DETECTION)
    merged["type"] = kind
    if kind == "semantic_vad":
        eagerness = value.get("eagerness", merged.get("eagerness", "auto"))
        if eagerness not in SEMANTIC_SILENCE_MS:
            raise ConfigError(
                f"'{param}.eagerness' must be one of {', '.join(map(repr, SEMANTIC_SILENCE_MS))}",
                f"{param}.eagerness",
            )
        merged.update(eagerness=eagerness, silence_duration_ms=SEMANTIC_SILENCE_MS[eagerness])
        value = {k: v for k, v in value.items() if k in ("create_response", "interrupt_response")}
    if "threshold" in value:
        merged["threshold"] = _number(value["threshold"], f"{param}.threshold", 0.0, 1.0)
    for key, high in (("prefix_padding_ms", 5000), ("silence_duration_ms", 10000)):
        if key in value:
            merged[key] = int(_number(value[key], f"{param}.{key}", 0, high))
    for key in ("create_response", "interrupt_response"):
        if key in value:
            merged[key] = _boolean(value[key], f"{param}.{key}")
    return merged


def _transcription(value: Any, param: str, config: SessionConfig) -> tuple[dict[str, Any] | None, str | None]:
    if value is None:
        return None, config.language
    value = _object(value, param)
    language = value.get("language", config.language)
    if language is not None and (
        not isinstance(language, str) or not 2 <= len(language) <= 3 or not language.isalpha()
    ):
        raise ConfigError(f"'{param}.language' must be an ISO-639-1 code such as 'fr'", f"{param}.language")
    shown = {k: v for k, v in value.items() if k in ("model", "language", "prompt")}
    shown.setdefault("model", "whisper-1")
    shown["language"] = language
    return shown, language


def _tools(value: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"'{param}' must be a list of tools", param, "invalid_type")
    tool_use(value, "auto", param)  # each checked now: a bad schema is this event's error
    return copy.deepcopy(value)


def tool_use(
    tools: list[dict[str, Any]], choice: Any, param: str = "session.tools", *, parallel: bool = True
) -> ToolUse | None:
    """The Realtime protocol's flat tools (`{"type": "function", "name", "description",
    "parameters"}`) and `tool_choice` ("auto", "none", "required", or `{"type": "function",
    "name"}`) as the chat engine takes them; None when nothing is to be called. ConfigError
    names a tool or schema the server cannot enforce."""
    if not tools:
        if choice not in (None, "none", "auto"):
            raise ConfigError("'tool_choice': there are no tools to call", "tool_choice")
        return None
    if len(tools) > MAX_TOOLS:
        raise ConfigError(f"'{param}': at most {MAX_TOOLS} tools", param)
    specs: list[ToolSpec] = []
    total = 0
    for index, tool in enumerate(tools):
        where = f"{param}[{index}]"
        if tool.get("type", "function") != "function":
            raise ConfigError(
                f"'{where}.type': only 'function' tools are supported", f"{where}.type", "unsupported_value"
            )
        name = tool.get("name")
        if (why := check_name(name)) is not None:
            raise ConfigError(f"'{where}.name' {why}", f"{where}.name")
        if any(spec.name == name for spec in specs):
            raise ConfigError(f"'{where}.name': {name!r} is given twice", f"{where}.name")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"'{where}.description' must be a string", f"{where}.description", "invalid_type")
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        try:
            schema = check_schema(parameters)
            check_buildable(schema)
        except SchemaRefused as exc:
            at = f" at `{exc.path}`" if exc.path else ""
            raise ConfigError(f"'{where}.parameters': the schema{at} {exc}", f"{where}.parameters") from exc
        total += len(json.dumps(schema, separators=(",", ":")))
        if total > MAX_SCHEMA_CHARS:
            raise ConfigError(f"'{param}': the schemas are larger than {MAX_SCHEMA_CHARS} characters", param)
        specs.append(ToolSpec(name=name, description=description, parameters=schema))  # type: ignore[arg-type]
    if choice is None or choice == "auto":
        return ToolUse(tuple(specs), "auto", parallel=parallel)
    if choice == "none":
        return None
    if choice == "required":
        return ToolUse(tuple(specs), "required", parallel=parallel)
    named = choice.get("name") if isinstance(choice, dict) and choice.get("type", "function") == "function" else None
    if not isinstance(named, str) or all(spec.name != named for spec in specs):
        raise ConfigError(
            "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": one of the tools}",
            "tool_choice",
        )
    return ToolUse(tuple(specs), "named", name=named, parallel=False)


def apply_update(config: SessionConfig, update: Any, dialect: Dialect) -> SessionConfig:
    """The session after a `session.update`'s `session` object; ConfigError names the first
    field that cannot be used, and then nothing changes."""
    update = _object(update, "session")
    new = replace(config)
    if "instructions" in update:
        if not isinstance(update["instructions"], str):
            raise ConfigError("'session.instructions' must be a string", "session.instructions", "invalid_type")
        new.instructions = update["instructions"]
    if "tools" in update:
        new.tools = _tools(update["tools"], "session.tools")
    if "tool_choice" in update:
        new.tool_choice = copy.deepcopy(update["tool_choice"])
    if "parallel_tool_calls" in update:
        new.parallel_tool_calls = _boolean(update["parallel_tool_calls"], "session.parallel_tool_calls")
    if "tools" in update or "tool_choice" in update:
        tool_use(new.tools, new.tool_choice)
    if "temperature" in update:
        new.temperature = _number(update["temperature"], "session.temperature", 0.0, 2.0)
    if dialect == "beta":
        if "modalities" in update:
            new.output_modalities = modalities(update["modalities"], "session.modalities")
        if "voice" in update:
            new.voice = str(update["voice"])
        if "speed" in update:
            new.speed = _number(update["speed"], "session.speed", 0.25, 4.0)
        if "input_audio_format" in update:
            new.input_format = _wire_format(update["input_audio_format"], "session.input_audio_format", dialect)
        if "output_audio_format" in update:
            new.output_format = _wire_format(update["output_audio_format"], "session.output_audio_format", dialect)
        if "input_audio_transcription" in update:
            new.transcription, new.language = _transcription(
                update["input_audio_transcription"], "session.input_audio_transcription", new
            )
        if "turn_detection" in update:
            new.turn_detection = _turn_detection(
                update["turn_detection"], "session.turn_detection", config.turn_detection
            )
        if "input_audio_noise_reduction" in update:
            new.noise_reduction = update["input_audio_noise_reduction"]
        if "max_response_output_tokens" in update:
            new.max_output_tokens = max_tokens(
                update["max_response_output_tokens"], "session.max_response_output_tokens"
            )
        return new
    if update.get("type", "realtime") != "realtime":
        raise ConfigError("'session.type' must be 'realtime' (transcription sessions are not served)", "session.type")
    if "output_modalities" in update:
        new.output_modalities = modalities(update["output_modalities"], "session.output_modalities")
    if "max_output_tokens" in update:
        new.max_output_tokens = max_tokens(update["max_output_tokens"], "session.max_output_tokens")
    audio = _object(update.get("audio", {}), "session.audio")
    audio_in = _object(audio.get("input", {}), "session.audio.input")
    audio_out = _object(audio.get("output", {}), "session.audio.output")
    if "format" in audio_in:
        new.input_format = _wire_format(audio_in["format"], "session.audio.input.format", dialect)
    if "transcription" in audio_in:
        new.transcription, new.language = _transcription(
            audio_in["transcription"], "session.audio.input.transcription", new
        )
    if "turn_detection" in audio_in:
        new.turn_detection = _turn_detection(
            audio_in["turn_detection"], "session.audio.input.turn_detection", config.turn_detection
        )
    if "noise_reduction" in audio_in:
        new.noise_reduction = audio_in["noise_reduction"]
    if "format" in audio_out:
        new.output_format = _wire_format(audio_out["format"], "session.audio.output.format", dialect)
    if "voice" in audio_out:
        voice = audio_out["voice"]
        new.voice = str(voice.get("id") if isinstance(voice, dict) else voice)
    if "speed" in audio_out:
        new.speed = _number(audio_out["speed"], "session.audio.output.speed", 0.25, 4.0)
    return new


# --- writing --------------------------------------------------------------------------------------


def _ga_format(wire: WireFormat) -> dict[str, Any]:
    return {"type": GA_NAMES[wire], "rate": WIRE_RATES[wire]} if wire == "pcm16" else {"type": GA_NAMES[wire]}


def render_session(config: SessionConfig, dialect: Dialect, session_id: str) -> dict[str, Any]:
    if dialect == "beta":
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": config.model,
            "modalities": list(config.output_modalities),
            "instructions": config.instructions,
            "voice": config.voice,
            "speed": config.speed,
            "input_audio_format": config.input_format,
            "output_audio_format": config.output_format,
            "input_audio_transcription": copy.deepcopy(config.transcription),
            "input_audio_noise_reduction": copy.deepcopy(config.noise_reduction),
            "turn_detection": shown_turn_detection(config.turn_detection),
            "tools": copy.deepcopy(config.tools),
            "tool_choice": copy.deepcopy(config.tool_choice),
            "parallel_tool_calls": config.parallel_tool_calls,
            "temperature": config.temperature,
            "max_response_output_tokens": config.max_output_tokens,
        }
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": config.model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {
            "input": {
                "format": _ga_format(config.input_format),
                "transcription": copy.deepcopy(config.transcription),
                "noise_reduction": copy.deepcopy(config.noise_reduction),
                "turn_detection": shown_turn_detection(config.turn_detection),
            },
            "output": {"format": _ga_format(config.output_format), "voice": config.voice, "speed": config.speed},
        },
        "tools": copy.deepcopy(config.tools),
        "tool_choice": copy.deepcopy(config.tool_choice),
        "parallel_tool_calls": config.parallel_tool_calls,
        "max_output_tokens": config.max_output_tokens,
    }


def shown_turn_detection(detection: dict[str, Any] | None) -> dict[str, Any] | None:
    """The session's turn detection as the client set it: `semantic_vad` shows its own fields,
    not the silence it is served with."""
    if detection is None or detection["type"] != "semantic_vad":
        return copy.deepcopy(detection)
    return {k: detection[k] for k in ("type", "eagerness", "create_response", "interrupt_response")}
