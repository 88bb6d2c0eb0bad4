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
import pickletools
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from clearbench.atomic import write_atomic
from clearbench.config import home
from clearbench.encoders.card import EncoderCard, WeightsSpec
from clearbench.encoders.family import StateDict
from clearbench.errors import ClearbenchError, InputError

# Checkpoint containers, outermost first: training scripts nest the state dict under one of these keys.
CONTAINER_KEYS = ("state_dict", "model", "module", "model_state_dict", "network")
# Wrappers around the whole model: DDP/DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# A MoCo v3 training checkpoint keeps the encoder as base_encoder next to momentum_encoder and predictor.
MOCO_PREFIX = "base_encoder."

# torch's weights_only unpickler names the class it refused; anything else it rejects is a damaged file.
_PICKLED_GLOBAL = re.compile(r"unsupported\s+(?:global|class)\b:?\s*(?:GLOBAL\s+)?([\w.]+)", re.I)
_UNSUPPORTED_OPCODE = re.compile(r"Unsupported operand \d+")
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
    for path in local_candidates(spec, tried):
        if path.is_file():
            return WeightsLocation(path, tuple(tried))
    if spec.hf_repo and spec.hf_file:
        tried.append(f"Hugging Face cache: {spec.hf_repo}/{spec.hf_file}")
        cached = _hf_cached(spec.hf_repo, spec.hf_file, spec.hf_revision)
        if cached is not None:
            return WeightsLocation(cached, tuple(tried))
    return WeightsLocation(None, tuple(tried))


def local_candidates(spec: WeightsSpec, tried: list[str]) -> Iterator[Path]:
    """The path the card's env var names, then its ``path``; each is recorded in ``tried`` as it is reached."""
    if spec.env:
        value = os.environ.get(spec.env)
        if value:
            path = Path(value).expanduser()
            tried.append(f"${spec.env} = {path}")
            yield path
        else:
            tried.append(f"${spec.env} (not set)")
    if spec.path:
        path = expand_path(spec.path)
        tried.append(str(path))
        yield path


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
# A digest is reused only for the same file in the same state: same device and inode (a file moved or copied
# over is another inode), size, mtime, and ctime, which the kernel sets on every change and which, unlike
# mtime (``touch -r``, ``os.utime``), a user cannot set back.
_FileState = tuple[str, int, int, int, int, int]
_memory_cache: dict[_FileState, str] = {}


def _cache_file() -> Path:
    return home() / "cache" / "sha256.json"


def _file_state(path: Path, stat: os.stat_result) -> _FileState:
    return (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed in chunks; cached by (path, device, inode, size, mtime, ctime).

    Checkpoints run to gigabytes; re-hashing one on every ``embed`` or ``encoders show`` would cost seconds.
    """
    path = Path(path).resolve()
    with path.open("rb") as fh:
        return _sha256_of_open(path, fh)


def _sha256_of_open(path: Path, fh: BinaryIO) -> str:
    """The digest of the open file ``fh`` (from its own fstat, so a path swapped meanwhile cannot fool it)."""
    key = _file_state(path, os.fstat(fh.fileno()))
    if key in _memory_cache:
        return _memory_cache[key]
    disk_key = "|".join(map(str, key))
    disk = _read_disk_cache()
    digest = disk.get(disk_key)
    if digest is None:
        h = hashlib.sha256()
        fh.seek(0)
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
        fh.seek(0)
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
        write_atomic(target, json.dumps(data, indent=0, sort_keys=True))
    except OSError:
        return  # a read-only home only costs a re-hash next time


def _check_sha256(path: Path, digest: str, expected: str | None) -> None:
    if expected is not None and digest != expected.lower():
        raise InputError(
            path,
            f"sha256 {digest} does not match the card's {expected}; "
            "the file is not the one the card describes (re-download it, or fix [weights] sha256)",
        )


# -- reading -----------------------------------------------------------------------------------------
def load_verified(
    path: Path, expected_sha256: str | None = None, trust_checkpoint: bool = False
) -> tuple[StateDict, str]:
    """The state dict and the sha256 of the very bytes it was read from, checked against ``expected_sha256``.

    The file is opened once: hashed (or its digest taken from the cache) through that handle, then loaded
    from it, and its state compared before and after. Re-opening the path to load would let a file swapped in
    between the two be loaded under the digest of the other.
    """
    path = Path(path)
    with _open_checkpoint(path.resolve()) as fh:
        before = os.fstat(fh.fileno())
        digest = _sha256_of_open(path.resolve(), fh)
        _check_sha256(path, digest, expected_sha256)
        state = _read_open(path, fh, trust_checkpoint)
        after = os.fstat(fh.fileno())
    if _file_state(path, before) != _file_state(path, after):
        raise InputError(path, "the file changed while it was being read; run again once nothing writes to it")
    return state, digest


def read_state_dict(path: Path, trust_checkpoint: bool = False) -> StateDict:
    """The backbone's state dict from a checkpoint file, with common containers and wrappers removed.

    ``torch.load(weights_only=True)`` by default: a checkpoint that needs arbitrary pickled objects can run
    code when loaded, so it is refused unless the user says they trust it. ``.safetensors`` never needs pickle.
    """
    path = Path(path)
    with _open_checkpoint(path) as fh:
        return _read_open(path, fh, trust_checkpoint)


def _open_checkpoint(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc


def _read_open(path: Path, fh: BinaryIO, trust_checkpoint: bool) -> StateDict:
    fh.seek(0)
    if path.suffix == ".safetensors":
        from safetensors.torch import load

        try:
            return unwrap_checkpoint(load(fh.read()), path)
        except Exception as exc:
            raise InputError(path, f"not a readable safetensors file ({_first_line(exc)})") from exc
    try:
        if trust_checkpoint:
            obj = torch.load(fh, map_location="cpu", weights_only=False, pickle_module=_NAMING_PICKLE)
        else:
            obj = torch.load(fh, map_location="cpu", weights_only=True)
    except _MissingClass as exc:
        raise InputError(
            path,
            f"pickled class {exc.name} from module {exc.module} cannot be imported ({exc.reason}): "
            f"install {exc.module.split('.')[0]} or re-save the state_dict",
        ) from None
    except pickle.UnpicklingError as exc:
        needs = _PICKLED_GLOBAL.search(str(exc))
        name = needs[1] if needs else None
        if name is None and not trust_checkpoint and _UNSUPPORTED_OPCODE.search(str(exc)):
            fh.seek(0)
            name = _first_pickled_global(fh)
        if trust_checkpoint or name is None:
            detail = _UNPICKLER_DETAIL.search(str(exc))
            raise InputError(
                path, f"not a readable torch checkpoint ({detail[1] if detail else _first_line(exc)})"
            ) from None
        raise InputError(
            path,
            f"needs pickle (pass --trust-checkpoint only for files you trust): it holds the pickled global {name}, "
            "and unpickling can run code; the safe loader reads tensors only (Python: trust_checkpoint=True)",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable torch checkpoint ({_first_line(exc)})") from exc
    return unwrap_checkpoint(obj, path)


class _MissingClass(Exception):
    """A trusted pickle names a class that cannot be imported here."""

    def __init__(self, module: str, name: str, reason: str) -> None:
        self.module, self.name, self.reason = module, name, reason
        super().__init__(f"{module}.{name}: {reason}")


class _NamingUnpickler(pickle.Unpickler):
    """pickle's unpickler, except that a class it cannot import is reported with its module and name."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError) as exc:
            raise _MissingClass(module, name, _first_line(exc)) from None


# torch.load takes a pickle *module*; this one is pickle with the unpickler above.
_NAMING_PICKLE = types.ModuleType("clearbench_pickle")
_NAMING_PICKLE.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
_NAMING_PICKLE.__dict__["Unpickler"] = _NamingUnpickler


def _first_pickled_global(fh: BinaryIO) -> str | None:
    """The first global a raw pickle stream would import, found without running it; None if it is no pickle.

    torch's safe loader stops at the first opcode it does not support (newer pickle protocols), which says
    nothing about what the file holds; the opcodes do.
    """
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(fh):
            if op.name in ("GLOBAL", "INST"):
                return str(arg).replace(" ", ".")
            if op.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - anything that does not parse as a pickle is simply not one
        return None
    return None


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
            raise InputError(
                path,
                f"no state dict found: top-level keys are {keys} "
                f"(expected tensors, or one of {', '.join(CONTAINER_KEYS)})",
            )
        obj = inner.state_dict() if isinstance(inner, nn.Module) else inner
    if not isinstance(obj, Mapping):
        raise InputError(path, f"not a state dict but a {type(obj).__name__}; save model.state_dict() instead")
    state: StateDict = FileStateDict(obj)
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if any(k.startswith(MOCO_PREFIX) for k in state):
        state = {k[len(MOCO_PREFIX) :]: v for k, v in state.items() if k.startswith(MOCO_PREFIX)}
    return FileStateDict(state, file_names={id(v): k for k, v in obj.items()})


class FileStateDict(dict):
    """A state dict that remembers each tensor's key in the user's file (``file_names``: tensor id -> key).

    Wrappers, families and converters rename keys; the tensors mostly survive as the same objects, so an
    error about a key can still name it as the user will find it in their file.
    """

    def __init__(self, *args: Any, file_names: Mapping[int, str] | None = None) -> None:
        super().__init__(*args)
        self.file_names = dict(file_names or {})


def _is_state_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


# -- loading -----------------------------------------------------------------------------------------
def load_strict(
    model: nn.Module,
    state_dict: StateDict,
    path: Path | str = "<checkpoint>",
    file_names: Mapping[int, str] | None = None,
) -> None:
    """Load every key or fail: missing, unexpected and wrongly shaped keys are listed (the first few of each).

    ``file_names`` (tensor id -> key in the user's file, as :class:`FileStateDict` keeps them) lets the error
    name keys as the user's file has them, with the model's name beside those the family renamed.
    """
    own = model.state_dict()
    names = _KeyNames(state_dict, file_names or {})
    missing = [names.expected(k) for k in own if k not in state_dict]
    unexpected = [names.in_file(k) for k in state_dict if k not in own]
    wrong_shape = [
        f"{names.in_file(k)} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    parts = [
        _listing(what, keys)
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        if keys
    ]
    if parts:
        raise InputError(
            path,
            "weights do not fit the model: "
            + "; ".join(parts)
            + " (is this a checkpoint of this family, and do the card's [params] match it?)",
        )
    model.load_state_dict(state_dict, strict=True)


class _KeyNames:
    """How a model key was, or would have been, named in the user's file."""

    def __init__(self, state_dict: StateDict, file_names: Mapping[int, str]) -> None:
        self.in_file_of = {k: file_names[id(v)] for k, v in state_dict.items() if id(v) in file_names}
        # When every renamed key just lost one prefix, a missing key would have carried that prefix too.
        prefixes = {f[: len(f) - len(k)] for k, f in self.in_file_of.items() if f.endswith(k)}
        plain = all(f.endswith(k) for k, f in self.in_file_of.items())
        self.prefix = next(iter(prefixes)) if plain and len(prefixes) == 1 else None

    def in_file(self, key: str) -> str:
        found = self.in_file_of.get(key, key)
        return key if found == key else f"{found} (the model's {key})"

    def expected(self, key: str) -> str:
        return f"{self.prefix}{key} (the model's {key})" if self.prefix else key


def _listing(what: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    more = f", ... (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {what} key(s): {shown}{more}"
