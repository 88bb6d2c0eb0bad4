"""Model folders: a ``config.json`` next to safetensors weights, given as a path or found in the local HF cache.

Families such as ``hf`` load a whole folder rather than one state-dict file. This module finds that folder
without any network access: a card's environment variable or path names a local folder, and a Hugging Face
repo id is looked up in the local cache only (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
``~/.cache/huggingface/hub``), read at call time so a changed environment is honoured. A repo that is not
there is an error naming the cache and the command that fills it on a machine with internet.

Only ``.safetensors`` weights are read: they cannot run code when loaded, so no trust flag is needed.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from clearbench.encoders.card import EncoderCard
from clearbench.encoders.weights import WeightsLocation, file_sha256, local_candidates
from clearbench.errors import ClearbenchError, InputError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hf_cache_dir() -> Path:
    """The local Hugging Face hub cache, as ``huggingface_hub`` would resolve it from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME")
    base = (
        Path(hf_home).expanduser()
        if hf_home
        else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "huggingface"
    )
    return base / "hub"


def looks_like_repo_id(text: str) -> bool:
    """``org/name`` with no leading ``/``, ``.`` or ``~``: what a Hugging Face repo id looks like."""
    return bool(_REPO_ID.match(text))


def cached_snapshot(repo: str, revision: str | None = None) -> Path | None:
    """The folder of ``repo`` in the local cache (``models--org--name/snapshots/<commit>``), or None.

    ``revision`` is a commit hash or a ref such as ``main`` (resolved through ``refs/``); never a download.
    """
    repo_dir = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    snapshots = repo_dir / "snapshots"
    ref = revision or "main"
    ref_file = repo_dir / "refs" / ref
    commit = ref_file.read_text(encoding="utf-8").strip() if ref_file.is_file() else ref
    folder = snapshots / commit
    if folder.is_dir():
        return folder
    if revision is None and snapshots.is_dir():  # no refs/main (a copied cache): the only snapshot there is
        found = [p for p in snapshots.iterdir() if p.is_dir()]
        if len(found) == 1:
            return found[0]
    return None


def locate_model_folder(card: EncoderCard) -> WeightsLocation:
    """Look for a card's model folder: the env var, then ``path`` (a folder, or a repo id), then ``hf_repo``."""
    spec = card.weights
    tried: list[str] = []
    for path in local_candidates(spec, tried):
        if path.is_dir():
            return WeightsLocation(path, tuple(tried))
    repos = [spec.hf_repo] if spec.hf_repo else []
    if not repos and spec.path and looks_like_repo_id(spec.path):  # weights = "org/name": a repo id in the cache
        repos.append(spec.path)
    for repo in repos:
        tried.append(
            f"Hugging Face cache {hf_cache_dir()}: {repo}" + (f"@{spec.hf_revision}" if spec.hf_revision else "")
        )
        folder = cached_snapshot(repo, spec.hf_revision)
        if folder is not None:
            return WeightsLocation(folder, tuple(tried))
    return WeightsLocation(None, tuple(tried))


def require_model_folder(card: EncoderCard) -> Path:
    """The card's model folder; when absent, an error naming where it was looked for and how to fill the cache."""
    location = locate_model_folder(card)
    if location.path is not None:
        return location.path
    spec = card.weights
    repo = spec.hf_repo or (spec.path if spec.path and looks_like_repo_id(spec.path) else None)
    where = f" ({card.path})" if card.path else ""
    if repo:
        how = (
            f"on a machine with internet run `hf download {repo}` (or `huggingface-cli download {repo}`) and "
            f"copy the cache to {hf_cache_dir()} (or set HF_HUB_CACHE to the copy), or put the model folder "
            "anywhere and point [weights] path or env at it"
        )
    else:
        how = "point [weights] path or env at a folder holding config.json and *.safetensors"
    raise ClearbenchError(
        f"model folder for encoder '{card.name}'{where} not found; looked in: "
        f"{'; '.join(location.tried)}. To fix: {how}"
    )


def weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors weights (one file or the shards); an error when there are none."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pth", ".pt", ".ckpt"))
    found = f" (found {', '.join(others)}: pickled weights are not read; save them as safetensors)" if others else ""
    raise InputError(folder, f"no *.safetensors weights in the model folder{found}")


def files_sha256(files: list[Path]) -> str:
    """One digest for the weights: the file's sha256, or for shards the sha256 of ``name digest`` lines."""
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.name} {file_sha256(p)}\n" for p in sorted(files, key=lambda p: p.name))
    return hashlib.sha256(lines.encode()).hexdigest()


def verify_folder_sha256(folder: Path, files: list[Path], expected: str | None) -> str:
    """The weights' digest (see :func:`files_sha256`); raises when the card declares a different one."""
    digest = files_sha256(files)
    if expected is not None and digest != expected.lower():
        raise InputError(
            folder,
            f"weights sha256 {digest} does not match the card's {expected}; the folder does "
            "not hold the weights the card describes (fetch them again, or fix [weights] sha256)",
        )
    return digest
