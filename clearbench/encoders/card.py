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

    [params]                             # the family's parameters (its params_model: unknown keys and
                                         # wrong types are refused)
    [preprocessing]                      # overrides of the family's preprocessing (unknown keys refused)

``random = true`` (with ``seed``) in the table is the long form of ``weights = "random:<seed>"``.
``weights = "none"`` is for families that learn nothing (``hu-hist``).

The file is read into the strict models :class:`CardFile` and :class:`WeightsTable` (``clearbench.settings``):
an unknown key or a value of the wrong type is refused, never dropped or coerced, in one line naming the file,
the key path and what was expected (``card.toml: field 'weights.sha256': sha256 must be 64 hex digits, got
'abc'``). ``[params]`` is checked by the card's family once the registry knows it
(:meth:`clearbench.encoders.family.Family.resolve_params`), with the same kind of line. The validated card is
an :class:`EncoderCard` (a frozen dataclass, so callers copy it with ``dataclasses.replace``) whose weights are
a :class:`WeightsSpec`: the validated table itself, or what a string form says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import Field, field_validator

from clearbench.atomic import write_atomic
from clearbench.config import read_toml, user_card_dir
from clearbench.errors import ClearbenchError
from clearbench.settings import Settings, validate_settings

_HEX = frozenset("0123456789abcdef")


class WeightsTable(Settings):
    """A card's ``[weights]`` table, as written (the string forms are read by :class:`CardFile`)."""

    random: bool = False
    seed: int = 0
    # The sources in the order they are tried (and written back by WeightsSpec.to_toml).
    env: str | None = None
    path: str | None = None
    hf_repo: str | None = None
    hf_file: str | None = None
    hf_revision: str | None = None
    sha256: str | None = None
    note: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        """Lower-cased, so a digest copied from any tool compares equal to the one clearbench computes."""
        if value is None:
            return None
        digest = value.lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise ValueError(f"sha256 must be 64 hex digits, got {value!r}")
        return digest


def _check_sources(table: WeightsTable) -> None:
    """Random weights or at least one place to find the file, never both: a table that says both is a card
    whose meaning depends on which source the loader happens to try first.

    Checked by :class:`CardFile` rather than a model validator of :class:`WeightsTable`: pydantic names such a
    model in an error's location by its validator, and the one-line message could no longer list its keys.
    """
    files = table.path or table.env or table.hf_repo
    if table.hf_file and not table.hf_repo:
        raise ValueError("hf_file needs hf_repo (the repository the file is in)")
    if not table.random and not files:
        raise ValueError("needs one of path, env, hf_repo (or random = true)")
    if table.random and files:
        raise ValueError("random = true cannot be combined with a path, env or hf_repo")


def _random_seed(text: str) -> int | None:
    """The seed of ``"random"``/``"random:<seed>"`` (0 when none is given); None for any other string."""
    if text != "random" and not text.startswith("random:"):
        return None
    seed = text.partition(":")[2] or "0"
    if not seed.lstrip("-").isdigit():
        raise ValueError(f"the seed after 'random:' must be an integer, got {text!r}")
    return int(seed)


class CardFile(Settings):
    """An encoder card file (the TOML table): every key typed, unknown keys refused.

    ``params`` and ``preprocessing`` are tables here; their keys are the family's, checked by the family
    (:meth:`clearbench.encoders.family.Family.resolve_params`) once the registry knows which family it is.
    """

    name: str
    family: str
    paper_name: str | None = None
    dim: Annotated[int, Field(gt=0)] | None = None
    description: str = ""
    license: str | None = None
    citation: str | None = None
    # Not simply required: a card without weights is told the forms it can take, not only "missing".
    weights: WeightsTable | str | None = Field(default=None, validate_default=True)
    params: dict[str, Any] = Field(default_factory=dict)
    preprocessing: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", "family")
    @classmethod
    def _stripped(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("name")
    @classmethod
    def _one_word(cls, value: str) -> str:
        """The name is a file name and a store table name: no spaces, no folders."""
        if any(c.isspace() or c == "/" for c in value):
            raise ValueError(f"{value!r} must not contain spaces or '/'")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_given(cls, value: WeightsTable | str | None) -> WeightsTable | str:
        if value is None:
            raise ValueError('the card needs weights: a path, "random", "random:<seed>", "none" or a [weights] table')
        if isinstance(value, str):
            _random_seed(value)
        else:
            _check_sources(value)
        return value


class WeightsSpec(WeightsTable):
    """Where a card's weights come from: its ``[weights]`` table, or what one of the string forms says
    (``none``: the family has no weights). Sources are tried in the order env, path, hf_repo."""

    none: bool = False

    def to_toml(self) -> str | dict[str, Any]:
        if self.random:
            return f"random:{self.seed}"
        if self.none:
            return "none"
        return self.model_dump(exclude={"random", "seed", "none"}, exclude_none=True)


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
    """Validate a card table into an :class:`EncoderCard`.

    What is wrong is one line with the key path and what was expected (``field 'weights.sha256': ...``): an
    :class:`InputError` naming ``path`` when the card comes from a file, else a :class:`ClearbenchError` (a
    plugin's card table, a card written from Python), whose caller says where the card came from.
    """
    card = validate_settings(CardFile, dict(data), path)
    return EncoderCard(
        name=card.name,
        family=card.family,
        weights=_weights_spec(card.weights),
        params=dict(card.params),
        preprocessing=dict(card.preprocessing),
        paper_name=card.paper_name,
        dim=card.dim,
        description=card.description,
        license=card.license,
        citation=card.citation,
        source=source,
        path=path,
    )


def _weights_spec(value: WeightsTable | str | None) -> WeightsSpec:
    """The validated ``weights`` value (a table or one of its string forms) as a :class:`WeightsSpec`."""
    assert value is not None  # CardFile refuses a card without weights
    if isinstance(value, WeightsTable):
        return WeightsSpec(**value.model_dump())
    if value == "none":
        return WeightsSpec(none=True)
    seed = _random_seed(value)
    return WeightsSpec(path=value) if seed is None else WeightsSpec(random=True, seed=seed)


def read_card(path: Path, source: str = "builtin") -> EncoderCard:
    """Read one card file; any problem is an :class:`InputError` naming the file and the reason."""
    return parse_card(read_toml(path, "card"), source=source, path=path)


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
