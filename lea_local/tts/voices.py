"""The voices /v1/audio/speech speaks with: the configured one (Léa's), every other Piper voice
of the catalog installed in the models directory (loaded on first use, then kept), and OpenAI's
voice names, each an alias of an installed voice (Léa's unless `LEA_TTS_VOICE_ALIASES` says
otherwise)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lea_local.catalog import Catalog
from lea_local.tts.base import SpeechSynthesizer

log = logging.getLogger(__name__)

# Every built-in voice OpenAI's speech API accepts (tts-1 and gpt-4o-mini-tts together).
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse",
)  # fmt: skip


class UnknownVoice(LookupError):
    """No installed voice by that name (the API answers 400, param "voice")."""


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    """What a client sends as `voice`."""
    speaks_with: str
    """The installed voice that speaks for this name (itself for an installed voice)."""
    loaded: bool


def voice_name(path: Path) -> str:
    """A Piper voice's name: its file name without `.onnx` (e.g. `fr_FR-siwis-medium`)."""
    return path.name.removesuffix(".onnx")


def installed_piper_voices(catalog: Catalog, models_dir: Path) -> dict[str, Path]:
    """Every Piper voice of the catalog whose files are all in `models_dir`, by voice name."""
    voices: dict[str, Path] = {}
    for entry in catalog.models.values():
        if entry.kind != "tts" or entry.engine != "piper" or not entry.is_installed(models_dir):
            continue
        onnx = next((f.name for f in entry.files if f.name.endswith(".onnx")), None)
        if onnx is not None:
            path = entry.path_of(models_dir, onnx)
            voices[voice_name(path)] = path
    return voices


class VoiceRegistry:
    """Voices by name. The configured voice is loaded at start; another installed voice is
    loaded by the first request that names it, once, and kept for the server's life."""

    def __init__(
        self,
        default: SpeechSynthesizer,
        installed: Mapping[str, Path],
        load: Callable[[Path], SpeechSynthesizer],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        """`aliases`: a name (an OpenAI voice or any other) → the installed voice that speaks
        for it; OpenAI's voice names not listed speak with `default`. Raises ValueError when
        an alias names a voice that is not installed."""
        self.default = default
        self._paths = {name: path for name, path in installed.items() if name != default.voice_name}
        self._load = load
        self._loaded: dict[str, SpeechSynthesizer] = {default.voice_name: default}
        self._loading = asyncio.Lock()
        self._aliases = {name: default.voice_name for name in OPENAI_VOICES}
        for alias, target in (aliases or {}).items():
            if target not in self._loaded and target not in self._paths:
                raise ValueError(
                    f"voice alias {alias!r} names {target!r}, which is not installed; "
                    f"installed voices: {', '.join(self.installed())}"
                )
            self._aliases[alias] = target

    def installed(self) -> list[str]:
        """Installed voice names, the default first."""
        return [self.default.voice_name, *sorted(self._paths)]

    def resolve(self, name: str) -> str:
        """The installed voice that speaks for `name`; UnknownVoice when there is none."""
        if name in self._loaded or name in self._paths:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UnknownVoice(
            f"unknown voice {name!r}: use one of OpenAI's voice names ({', '.join(OPENAI_VOICES)}) "
            f"or an installed voice ({', '.join(self.installed())})"
        )

    async def synthesizer(self, name: str) -> SpeechSynthesizer:
        """The synthesiser of `name` (see `resolve`), loaded in a worker thread on first use."""
        voice = self.resolve(name)
        if voice in self._loaded:
            return self._loaded[voice]
        async with self._loading:  # one load per voice, however many requests ask at once
            if voice not in self._loaded:
                log.info("loading voice", extra={"event": "tts.voice_loaded", "voice": voice})
                self._loaded[voice] = await asyncio.to_thread(self._load, self._paths[voice])
        return self._loaded[voice]

    def describe(self) -> list[VoiceInfo]:
        """Installed voices first, then aliases."""
        entries = [VoiceInfo(name, name, name in self._loaded) for name in self.installed()]
        entries += [VoiceInfo(alias, target, target in self._loaded) for alias, target in self._aliases.items()]
        return entries
