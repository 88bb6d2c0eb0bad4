"""Finding, verifying and loading weights files: local only, pickle-free unless trusted, strictly.

A leaderboard row is only as good as the file behind it, so this module makes three promises: it never
touches the network (Hugging Face files come from the local cache), it records the sha256 of the exact file
it read (and refuses one that does not match the card), and it loads every key or fails, listing what did
not match. Silently half-loaded encoders are the classic way a benchmark ends up measuring random features.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clearbench.config import home
from clearbench.encoders.card import EncoderCard
from clearbench.encoders.family import StateDict
from clearbench.errors import ClearbenchError, InputError

# Checkpoint containers, outermost first: training scripts nest the state dict under one of these keys.
CONTAINER_KEYS = ("state_dict", "model", "module", "model_state_dict", "network")
# Wrappers around the whole model: DDP/DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# A MoCo v3 training checkpoint keeps the encoder as base_encoder next to momentum_encoder and predictor.
MOCO_PREFIX = "base_encoder."

# torch's weights_only unpickler names the class it refused; anything else it rejects is a damaged file.
_PICKLED_GLOBAL = re.compile(r"Unsupported (?:global|class):?\s*(?:GLOBAL\s+)?([\w.]+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", re.S)
_SHOWN = 5  # keys listed per kind in a strict-load error
_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsLocation:
    """Where a card's weights were looked for, and what was found."""

    path: Path | None  # the file to load (None: random, or not found)
    tried: tuple[str, ...]  # human-readable places that were looked at, in order
    random: bool = False
    none: bool = False  # a family without weights

    @property
    def found(self) -> bool:
        return self.random or self.none or self.path is not None


def locate_weights(card: EncoderCard) -> WeightsLocation:
    """Look for a card's weights without loading them: env var, then path, then the local HF cache."""
    spec = card.weights
    if spec.random:
        return WeightsLocation(None, (f"random:{spec.seed}",), random=True)
    if spec.none:
        return WeightsLocation(None, ("none",), none=True)
    tried: list[str] = []
    if spec.env:
        value = os.environ.get(spec.env)
        if value:
            path = Path(value).expanduser()
            tried.append(f"${spec.env} = {path}")
            if path.is_file():
                return WeightsLocation(path, tuple(tried))
        else:
            tried.append(f"${spec.env} (not set)")
    if spec.path:
        path = expand_path(spec.path)
        tried.append(str(path))
        if path.is_file():
            return WeightsLocation(path, tuple(tried))
    if spec.hf_repo and spec.hf_file:
        tried.append(f"Hugging Face cache: {spec.hf_repo}/{spec.hf_file}")
        path = _hf_cached(spec.hf_repo, spec.hf_file, spec.hf_revision)
        if path is not None:
            return WeightsLocation(path, tuple(tried))
    return WeightsLocation(None, tuple(tried))


def expand_path(text: str) -> Path:
    """A card path: ``~`` expanded; relative paths are under ``CLEARBENCH_HOME``."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else home() / path


def _hf_cached(repo: str, filename: str, revision: str | None) -> Path | None:
    """The file from the local Hugging Face cache, or None; this never makes a network request."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def require_weights(card: EncoderCard) -> Path:
    """The weights file of a card; when absent, an error naming where it was expected and the field to change."""
    location = locate_weights(card)
    if location.path is not None:
        return location.path
    spec = card.weights
    fields = [f for f, v in (("env", spec.env), ("path", spec.path), ("hf_repo", spec.hf_repo)) if v]
    where = f" ({card.path})" if card.path else ""
    hint = f" {spec.note.rstrip('.')}." if spec.note else ""
    raise ClearbenchError(
        f"weights for encoder '{card.name}' not found; looked in: {'; '.join(location.tried)}.{hint} "
        f"To use another location, change [weights] {' / '.join(fields)} in its card{where}, "
        f"or override the card with one of the same name in {home() / 'encoders'}"
    )


# -- hashing ------------------------------------------------------------------------------------------
_memory_cache: dict[tuple[str, int, int], str] = {}


def _cache_file() -> Path:
    return home() / "cache" / "sha256.json"


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed in chunks; cached by (path, size, mtime) in memory and under CLEARBENCH_HOME.

    Checkpoints run to gigabytes; re-hashing one on every ``embed`` or ``encoders show`` would cost seconds.
    A changed file changes size or mtime, so the cache never returns a stale digest for it.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _memory_cache:
        return _memory_cache[key]
    disk_key = f"{key[0]}|{key[1]}|{key[2]}"
    disk = _read_disk_cache()
    digest = disk.get(disk_key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        disk[disk_key] = digest
        _write_disk_cache(disk)
    _memory_cache[key] = digest
    return digest


def _read_disk_cache() -> dict[str, str]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_disk_cache(data: dict[str, str]) -> None:
    target = _cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True), encoding="utf-8")
        tmp.replace(target)
    except OSError:
        return  # a read-only home only costs a re-hash next time


def verify_sha256(path: Path, expected: str | None) -> str:
    """The file's sha256; raises when the card declares a different one."""
    digest = file_sha256(path)
    if expected is not None and digest != expected.lower():
        raise InputError(path, f"sha256 {digest} does not match the card's {expected}; "
                               "the file is not the one the card describes (re-download it, or fix [weights] sha256)")
    return digest


# -- reading -----------------------------------------------------------------------------------------
def read_state_dict(path: Path, trust_checkpoint: bool = False) -> StateDict:
    """The backbone's state dict from a checkpoint file, with common containers and wrappers removed.

    ``torch.load(weights_only=True)`` by default: a checkpoint that needs arbitrary pickled objects can run
    code when loaded, so it is refused unless the user says they trust it. ``.safetensors`` never needs pickle.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return unwrap_checkpoint(load_file(str(path), device="cpu"), path)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
            raise InputError(path, f"not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as exc:
        needs = _PICKLED_GLOBAL.search(str(exc))
        if trust_checkpoint or needs is None:
            detail = _UNPICKLER_DETAIL.search(str(exc))
            raise InputError(path, f"not a readable torch checkpoint ({detail[1] if detail else _first_line(exc)})") from exc
        raise InputError(
            path,
            f"the checkpoint holds pickled Python objects ({needs[1]}), which can run code when loaded; refused. "
            "If you trust where it came from, pass --trust-checkpoint (Python: trust_checkpoint=True)",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable torch checkpoint ({_first_line(exc)})") from exc
    return unwrap_checkpoint(obj, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def unwrap_checkpoint(obj: Any, path: Path | str = "<checkpoint>") -> StateDict:
    """Descend through ``{"state_dict": ...}``-style containers, then drop DDP/compile/MoCo wrappers."""
    if isinstance(obj, nn.Module):  # a trusted file that pickled the whole model
        obj = obj.state_dict()
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), (Mapping, nn.Module))), None)
        if inner is None:
            keys = ", ".join(map(str, list(obj)[:8]))
            raise InputError(path, f"no state dict found: top-level keys are {keys} "
                                   f"(expected tensors, or one of {', '.join(CONTAINER_KEYS)})")
        obj = inner.state_dict() if isinstance(inner, nn.Module) else inner
    if not isinstance(obj, Mapping):
        raise InputError(path, f"not a state dict but a {type(obj).__name__}; save model.state_dict() instead")
    state: StateDict = dict(obj)
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    if any(k.startswith(MOCO_PREFIX) for k in state):
        state = {k[len(MOCO_PREFIX):]: v for k, v in state.items() if k.startswith(MOCO_PREFIX)}
    return state


def _is_state_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


# -- loading -----------------------------------------------------------------------------------------
def load_strict(model: nn.Module, state_dict: StateDict, path: Path | str = "<checkpoint>") -> None:
    """Load every key or fail: missing, unexpected and wrongly shaped keys are listed (the first few of each)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    parts = [_listing(what, keys) for what, keys in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if keys]
    if parts:
        raise InputError(path, "weights do not fit the model: " + "; ".join(parts)
                         + " (is this a checkpoint of this family, and do the card's [params] match it?)")
    model.load_state_dict(state_dict, strict=True)


def _listing(what: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    more = f", ... (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {what} key(s): {shown}{more}"
