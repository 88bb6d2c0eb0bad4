"""Encoder cards: one TOML file that points a family at weights, parameters and preprocessing.

A card is data, not code, so a user can register a new checkpoint of a known architecture without writing
Python, and a leaderboard row can say exactly what produced it. The format::

    name = "mambaout-lecl0"              # what --encoder takes
    family = "mambaout"                  # the code: clearbench.encoders.family.BUILTIN_FAMILIES or a plugin
    paper_name = "MambaOut-LECL-0"       # the row name the CLEAR paper uses (optional)
    dim = 768                            # expected embedding dim (optional; checked against the model)
    description = "..."
    license = "..."
    citation = "..."

    [weights]                            # or "random", "random:3", "none" (no weights) or "/path/file.pth"
    env = "CLEARBENCH_WEIGHTS_MAMBAOUT_LECL0"   # an environment variable naming the file; wins when set
    path = "weights/mambaout-lecl0.pth"         # relative paths are under CLEARBENCH_HOME
    hf_repo = "org/repo"                         # a Hugging Face repo, from the local cache only
    hf_file = "model.bin"                        # the file in it (families that load a whole model folder,
                                                 # such as hf, take the repo without hf_file)
    sha256 = "..."                               # verified when present
    note = "where the file comes from and where to put it"

    [params]                             # the family's parameters (unknown names are refused)
    [preprocessing]                      # overrides of the family's preprocessing

``random = true`` (with ``seed``) in the table is the long form of ``weights = "random:<seed>"``.
``weights = "none"`` is for families that learn nothing (``hu-hist``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from clearbench.atomic import write_atomic
from clearbench.config import read_toml, user_card_dir
from clearbench.errors import ClearbenchError, InputError

_TOP_KEYS = {
    "name",
    "family",
    "paper_name",
    "dim",
    "description",
    "license",
    "citation",
    "weights",
    "params",
    "preprocessing",
}
_WEIGHT_KEYS = {"random", "seed", "path", "env", "hf_repo", "hf_file", "hf_revision", "sha256", "note"}


@dataclass(frozen=True)
class WeightsSpec:
    """Where a card's weights come from. Sources are tried in the order env, path, hf_repo."""

    random: bool = False
    none: bool = False  # the family has no weights
    seed: int = 0
    path: str | None = None
    env: str | None = None
    hf_repo: str | None = None
    hf_file: str | None = None
    hf_revision: str | None = None
    sha256: str | None = None
    note: str | None = None

    def to_toml(self) -> str | dict[str, Any]:
        if self.random:
            return f"random:{self.seed}"
        if self.none:
            return "none"
        return {
            k: v
            for k, v in (
                ("env", self.env),
                ("path", self.path),
                ("hf_repo", self.hf_repo),
                ("hf_file", self.hf_file),
                ("hf_revision", self.hf_revision),
                ("sha256", self.sha256),
                ("note", self.note),
            )
            if v is not None
        }


@dataclass(frozen=True)
class EncoderCard:
    """A parsed card, plus where it came from (``source``: builtin, user or plugin:<name>)."""

    name: str
    family: str
    weights: WeightsSpec
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    paper_name: str | None = None
    dim: int | None = None
    description: str = ""
    license: str | None = None
    citation: str | None = None
    source: str = "builtin"
    path: Path | None = None
    overrides: str | None = None  # the card (source and file) this one replaces, for `encoders show`

    def to_toml(self) -> dict[str, Any]:
        """The card as the TOML table it was read from (no source bookkeeping)."""
        out: dict[str, Any] = {"name": self.name, "family": self.family}
        for key in ("paper_name", "dim", "description", "license", "citation"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        out["weights"] = self.weights.to_toml()
        if self.params:
            out["params"] = dict(self.params)
        if self.preprocessing:
            out["preprocessing"] = dict(self.preprocessing)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The card plus its origin, JSON-ready (provenance and ``--json`` output)."""
        return {
            **self.to_toml(),
            "source": self.source,
            "file": str(self.path) if self.path else None,
            "overrides": self.overrides,
        }


def parse_card(data: Mapping[str, Any], *, source: str = "builtin", path: Path | None = None) -> EncoderCard:
    """Validate a card table; raises :class:`ClearbenchError` saying which field is wrong."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ClearbenchError(f"unknown card field(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
    for key in ("name", "family"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ClearbenchError(f"the card needs a non-empty string '{key}'")
    name = data["name"].strip()
    if any(c.isspace() or c == "/" for c in name):
        raise ClearbenchError(f"card name {name!r} must not contain spaces or '/'")
    dim = data.get("dim")
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
        raise ClearbenchError(f"'dim' must be a positive integer, got {dim!r}")
    for key in ("params", "preprocessing"):
        if not isinstance(data.get(key, {}), Mapping):
            raise ClearbenchError(f"[{key}] must be a table")
    for key in ("paper_name", "description", "license", "citation"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ClearbenchError(f"'{key}' must be a string")
    return EncoderCard(
        name=name,
        family=data["family"].strip(),
        weights=_parse_weights(data.get("weights")),
        params=dict(data.get("params", {})),
        preprocessing=dict(data.get("preprocessing", {})),
        paper_name=data.get("paper_name"),
        dim=dim,
        description=data.get("description", ""),
        license=data.get("license"),
        citation=data.get("citation"),
        source=source,
        path=path,
    )


def _parse_weights(value: Any) -> WeightsSpec:
    if value is None:
        raise ClearbenchError(
            'the card needs \'weights\' (a path, "random", "random:<seed>", "none" or a [weights] table)'
        )
    if isinstance(value, str):
        if value == "none":
            return WeightsSpec(none=True)
        if value == "random" or value.startswith("random:"):
            seed_text = value.partition(":")[2] or "0"
            if not seed_text.lstrip("-").isdigit():
                raise ClearbenchError(f"weights {value!r}: the seed after 'random:' must be an integer")
            return WeightsSpec(random=True, seed=int(seed_text))
        return WeightsSpec(path=value)
    if not isinstance(value, Mapping):
        raise ClearbenchError("'weights' must be a string or a table")
    unknown = sorted(set(value) - _WEIGHT_KEYS)
    if unknown:
        raise ClearbenchError(
            f"unknown [weights] field(s) {', '.join(unknown)} (known: {', '.join(sorted(_WEIGHT_KEYS))})"
        )
    for key in _WEIGHT_KEYS - {"random", "seed"}:
        if value.get(key) is not None and not isinstance(value[key], str):
            raise ClearbenchError(f"[weights] {key} must be a string")
    if not isinstance(value.get("random", False), bool):
        raise ClearbenchError("[weights] random must be true or false")
    seed = value.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ClearbenchError(f"[weights] seed must be an integer, got {seed!r}")
    spec = WeightsSpec(**{k: value[k] for k in _WEIGHT_KEYS if k in value})
    if spec.hf_file and not spec.hf_repo:
        raise ClearbenchError("[weights] hf_file needs hf_repo")
    if spec.sha256 is not None:
        digest = spec.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ClearbenchError("[weights] sha256 must be 64 hex digits")
        spec = replace(spec, sha256=digest)
    if not spec.random and not (spec.path or spec.env or spec.hf_repo):
        raise ClearbenchError("[weights] needs one of path, env, hf_repo (or random = true)")
    if spec.random and (spec.path or spec.env or spec.hf_repo):
        raise ClearbenchError("[weights] random = true cannot be combined with a path, env or hf_repo")
    return spec


def read_card(path: Path, source: str = "builtin") -> EncoderCard:
    """Read one card file; any problem is an :class:`InputError` naming the file and the reason."""
    data = read_toml(path, "card")
    try:
        return parse_card(data, source=source, path=path)
    except ClearbenchError as exc:
        raise InputError(path, str(exc)) from exc


def write_card(
    card: EncoderCard | Mapping[str, Any], directory: Path | None = None, *, overwrite: bool = False
) -> Path:
    """Write a card as ``<directory>/<name>.toml`` (default ``CLEARBENCH_HOME/encoders``); returns the path.

    Pretraining calls this so that a freshly trained backbone is an encoder at once. The card is validated
    first, and written atomically so a killed run never leaves half a card behind.
    """
    if not isinstance(card, EncoderCard):
        card = parse_card(card, source="user")
    directory = directory if directory is not None else user_card_dir("encoders")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{card.name}.toml"
    if target.exists() and not overwrite:
        raise ClearbenchError(f"{target}: a card named '{card.name}' already exists; pass overwrite=True to replace it")
    try:
        text = tomli_w.dumps(card.to_toml())
    except TypeError as exc:  # None or an object: TOML has no null, and a card must be plain data
        raise ClearbenchError(f"card '{card.name}' cannot be written as TOML ({exc}); leave out None values") from exc
    write_atomic(target, text)
    return target
