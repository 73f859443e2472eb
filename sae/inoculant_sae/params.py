"""Job parameters (PROTOCOL.md), parsed from the job message into typed dataclasses.

Every mistake becomes a `UserError` that names the field, so the TypeScript side can show it as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from .errors import UserError
from .pooling import PoolingOptions
from .sae.types import EncodeMode

_REQUIRED: Final = object()


@dataclass(frozen=True)
class HFModelSpec:
    path: Path
    dtype: Literal["auto", "bfloat16", "float16", "float32"]


@dataclass(frozen=True)
class PythonModelSpec:
    file: Path
    options: dict[str, Any]


ModelSpec = HFModelSpec | PythonModelSpec


@dataclass(frozen=True)
class SAESpec:
    format: str
    path: Path
    encode: EncodeMode


@dataclass(frozen=True)
class DiffParams:
    model: ModelSpec
    device: str
    sae: SAESpec
    block: int | None
    system_prompt: str | None
    pooling: PoolingOptions
    token_budget: int
    top_n: int
    row_top_k: int
    cache_dir: Path
    shard_rows: int


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    path: Path
    text_field: str | None
    messages_field: str | None
    max_rows: int | None
    # "skip": a row that cannot be read (not JSON, no such field, wrong type) is counted and left out.
    on_bad_row: Literal["fail", "skip"] = "fail"


@dataclass(frozen=True)
class HarvestParams:
    model: ModelSpec
    device: str
    sae: SAESpec
    block: int | None
    system_prompt: str | None
    latents: tuple[int, ...]
    top_k: int
    window_before: int
    window_after: int
    token_budget: int
    max_tokens: int
    pooling: PoolingOptions  # which tokens may be a peak: tokens="all", exclusions as given
    corpora: tuple[CorpusSpec, ...]
    cache_dir: Path
    shard_rows: int


class _Fields:
    """Typed access to one JSON object of the parameters; `where` prefixes error messages."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise UserError(f"{where} must be a JSON object, got {type(obj).__name__}")
        self._obj: dict[str, Any] = obj
        self._where = where

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def raw(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._obj.get(key)
        if value is None:
            if default is _REQUIRED:
                raise UserError(f"{self._name(key)} is required")
            return default
        return value

    def string(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.raw(key, default)
        if value is not default and not isinstance(value, str):
            raise UserError(f"{self._name(key)} must be a string, got {value!r}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        value = self.string(key, default)
        if value not in options:
            raise UserError(f"{self._name(key)} must be one of {', '.join(options)}; got {value!r}")
        return value

    def integer(self, key: str, default: Any = _REQUIRED, minimum: int | None = None) -> Any:
        value = self.raw(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{self._name(key)} must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise UserError(f"{self._name(key)} must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.raw(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise UserError(f"{self._name(key)} must be a positive number, got {value!r}")
        return float(value)

    def flag(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self.raw(key, default)
        if value is not default and not isinstance(value, bool):
            raise UserError(f"{self._name(key)} must be true or false, got {value!r}")
        return value

    def obj(self, key: str, default: Any = _REQUIRED) -> _Fields:
        value = self.raw(key, default)
        return _Fields({} if value is None else value, self._name(key))

    def present(self, key: str) -> bool:
        """True when the key is given, even as null (null can mean "off", absent means "default")."""
        return key in self._obj

    @property
    def where(self) -> str:
        return self._where


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _device(f: _Fields) -> str:
    device = f.string("device", "auto")
    if not _DEVICE.match(device):
        raise UserError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")
    return str(device)


def _model(f: _Fields) -> ModelSpec:
    backend = f.choice("backend", ("hf", "python"))
    if backend == "hf":
        dtype = f.choice("dtype", ("auto", "bfloat16", "float16", "float32"), "auto")
        return HFModelSpec(Path(f.string("path")), dtype)
    options = f.raw("options", {})
    if not isinstance(options, dict):
        raise UserError(f"{f.where}.options must be a JSON object")
    return PythonModelSpec(Path(f.string("file")), options)


def _sae(f: _Fields) -> SAESpec:
    fmt = f.choice("format", ("dictionary_learning", "saelens"))
    encode = f.choice("encode", tuple(m.value for m in EncodeMode), EncodeMode.THRESHOLD.value)
    return SAESpec(str(fmt), Path(f.string("path")), EncodeMode(encode))


def _block(f: _Fields) -> int | None:
    block = f.integer("block", None, minimum=0)
    return None if block is None else int(block)


def _system_prompt(f: _Fields) -> str | None:
    prompt = f.string("system_prompt", None)
    return None if prompt is None else str(prompt)


def _pooling(f: _Fields, tokens: Literal["all", "response"] | None) -> PoolingOptions:
    # null turns the outlier filter off; leaving the key out keeps the default multiple.
    outlier = (
        f.number("outlier_norm_multiple", None)
        if f.present("outlier_norm_multiple")
        else PoolingOptions().outlier_norm_multiple
    )
    return PoolingOptions(
        tokens=tokens if tokens is not None else f.choice("tokens", ("all", "response"), "all"),
        exclude_first=bool(f.flag("exclude_first", True)),
        exclude_special=bool(f.flag("exclude_special", True)),
        outlier_norm_multiple=outlier,
        truncate_to_shorter=bool(f.flag("truncate_to_shorter", False)) if tokens is None else False,
    )


DEFAULT_TOKEN_BUDGET = 8192


def parse_diff_params(params: Any) -> DiffParams:
    f = _Fields(params, "params")
    return DiffParams(
        model=_model(f.obj("model")),
        device=_device(f),
        sae=_sae(f.obj("sae")),
        block=_block(f),
        system_prompt=_system_prompt(f),
        pooling=_pooling(f.obj("pooling", {}), None),
        token_budget=int(f.integer("token_budget", DEFAULT_TOKEN_BUDGET, minimum=1)),
        top_n=int(f.integer("top_n", 200, minimum=1)),
        row_top_k=int(f.integer("row_top_k", 20, minimum=1)),
        cache_dir=Path(f.string("cache_dir")),
        shard_rows=int(f.integer("shard_rows", 256, minimum=1)),
    )


def _corpus(f: _Fields) -> CorpusSpec:
    text_field = f.string("text_field", None)
    messages_field = f.string("messages_field", None)
    if (text_field is None) == (messages_field is None):
        raise UserError(f"{f.where}: set exactly one of text_field and messages_field")
    max_rows = f.integer("max_rows", None, minimum=1)
    on_bad_row = f.choice("on_bad_row", ("fail", "skip"), "fail")
    return CorpusSpec(str(f.string("name")), Path(f.string("path")), text_field, messages_field, max_rows, on_bad_row)


def parse_harvest_params(params: Any) -> HarvestParams:
    f = _Fields(params, "params")
    latents = f.raw("latents")
    if (
        not isinstance(latents, list)
        or not latents
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in latents)
    ):
        raise UserError("params.latents must be a non-empty list of latent ids (integers >= 0)")
    raw_corpora = f.raw("corpora")
    if not isinstance(raw_corpora, list) or not raw_corpora:
        raise UserError("params.corpora must be a non-empty list")
    corpora = tuple(_corpus(_Fields(c, f"params.corpora[{i}]")) for i, c in enumerate(raw_corpora))
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise UserError(f"params.corpora names must be unique; got {names}")
    window = f.obj("window", {})
    return HarvestParams(
        model=_model(f.obj("model")),
        device=_device(f),
        sae=_sae(f.obj("sae")),
        block=_block(f),
        system_prompt=_system_prompt(f),
        latents=tuple(dict.fromkeys(int(x) for x in latents)),
        top_k=int(f.integer("top_k", 8, minimum=1)),
        window_before=int(window.integer("before", 24, minimum=0)),
        window_after=int(window.integer("after", 8, minimum=0)),
        token_budget=int(f.integer("token_budget", DEFAULT_TOKEN_BUDGET, minimum=1)),
        max_tokens=int(f.integer("max_tokens", 1024, minimum=2)),
        pooling=_pooling(f, "all"),
        corpora=corpora,
        cache_dir=Path(f.string("cache_dir")),
        shard_rows=int(f.integer("shard_rows", 1024, minimum=1)),
    )
