"""The encoder registry: cards from three places, families from two, and ``load_encoder``.

Cards are merged in this order, later sources winning only where stated:

1. built-in cards, shipped in the wheel (``clearbench/_cards/encoders`` -> the repository's ``encoders/``);
2. cards that packages add through the entry-point group ``clearbench.encoders`` (new names only);
3. the user's ``CLEARBENCH_HOME/encoders/*.toml``, which may override a card of the same name (the
   overridden card is recorded in ``EncoderCard.overrides`` and shown by ``clearbench encoders show``).

A bad card file costs one line naming the file and the reason; every other card still loads.

``Encoder.provenance`` (stored with every embedding table) holds: ``encoder``, ``family``, ``kind``, ``dim``,
``card`` (the card as a dict, with its source file), ``params`` (resolved, including dims read from the
checkpoint), ``preprocessing`` (as applied, including what the model's own config supplied),
``preprocessing_hash``, ``weights`` (the file or model folder path, ``random:<seed>``, or ``none`` for a family
without weights), ``weights_sha256`` (None unless weights were read; for a folder of shards, the digest of
their digests) and ``clearbench_version``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from importlib import import_module, resources
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from clearbench.config import user_card_dir
from clearbench.encoders.base import Encoder
from clearbench.encoders.card import EncoderCard, parse_card, read_card
from clearbench.encoders.family import BUILTIN_FAMILIES, ENTRY_POINT_GROUP, EncoderSpec, Family, seeded
from clearbench.encoders.model_folder import files_sha256, require_model_folder, verify_folder_sha256, weight_files
from clearbench.encoders.weights import (
    WeightsLocation,
    load_strict,
    load_verified,
    locate_weights,
    require_weights,
)
from clearbench.errors import ClearbenchError, InputError
from clearbench.problems import ProblemLog


# -- families ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plugins:
    families: dict[str, Family | type[Family]]
    cards: list[tuple[str, Mapping[str, Any] | Path]]  # (entry point name, card table or path)
    problems: list[tuple[str, str]]  # (where, reason)


@lru_cache(maxsize=1)
def _plugins() -> _Plugins:
    """Everything the ``clearbench.encoders`` entry points provide, loaded once per process."""
    families: dict[str, Family | type[Family]] = {}
    cards: list[tuple[str, Mapping[str, Any] | Path]] = []
    problems: list[tuple[str, str]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name} ({ep.value})"
        try:
            target = ep.load()
            items: Iterable[Any] = [target] if _is_family(target) else list(target())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the registry
            problems.append((where, f"cannot load: {type(exc).__name__}: {exc}"))
            continue
        for item in items:
            if _is_family(item):
                fam_name = getattr(item, "name", None)
                if not isinstance(fam_name, str):
                    problems.append((where, f"family {item!r} has no name"))
                elif fam_name in BUILTIN_FAMILIES or fam_name in families:
                    problems.append((where, f"family '{fam_name}' already exists; plugins cannot replace it"))
                else:
                    families[fam_name] = item
            elif isinstance(item, (Mapping, Path, str)):
                cards.append((ep.name, Path(item) if isinstance(item, str) else item))
            else:
                problems.append((where, f"returned {type(item).__name__}; expected a Family, a card table or a path"))
    return _Plugins(families, cards, problems)


def _is_family(obj: Any) -> bool:
    return isinstance(obj, Family) or (isinstance(obj, type) and issubclass(obj, Family))


def family_names() -> list[str]:
    """Every known family: built-ins and those added by plugins."""
    return sorted({*BUILTIN_FAMILIES, *_plugins().families})


def get_family(name: str) -> Family:
    """The family called ``name``, imported on first use."""
    target: Any = BUILTIN_FAMILIES.get(name) or _plugins().families.get(name)
    if target is None:
        raise ClearbenchError(f"unknown encoder family '{name}'; known families: {', '.join(family_names())}")
    return _family_instance(target)


@cache
def _family_instance(target: Any) -> Family:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(import_module(module), attr)
    family = target() if isinstance(target, type) else target
    if not isinstance(family, Family):
        raise ClearbenchError(f"{target!r} is not a clearbench.encoders.family.Family")
    return family


# -- cards -------------------------------------------------------------------------------------------
def builtin_card_dir() -> Path:
    """The built-in cards inside the installed package."""
    return Path(str(resources.files("clearbench") / "_cards" / "encoders"))


def _warn(problem: Any) -> None:
    warnings.warn(str(problem), stacklevel=3)


@dataclass
class _Catalogue:
    cards: dict[str, EncoderCard] = field(default_factory=dict)
    bad_files: dict[str, InputError] = field(default_factory=dict)  # file stem -> its error


def _catalogue(problems: ProblemLog) -> _Catalogue:
    cat = _Catalogue()

    def read_folder(folder: Path, source: str) -> list[EncoderCard]:
        found = []
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                try:
                    found.append(read_card(path, source))
                except InputError as exc:
                    cat.bad_files[path.stem] = exc
                    problems.report(path, exc.reason)
        return found

    for card in read_folder(builtin_card_dir(), "builtin"):
        cat.cards[card.name] = card
    plugins = _plugins()
    for where, reason in plugins.problems:
        problems.report(where, reason)
    for ep_name, item in plugins.cards:
        source = f"plugin:{ep_name}"
        if isinstance(item, Path):
            if item.is_dir():
                found = read_folder(item, source)
            else:
                try:
                    found = [read_card(item, source)]
                except InputError as exc:
                    cat.bad_files[item.stem] = exc
                    problems.report(item, exc.reason)
                    found = []
        else:
            try:
                found = [parse_card(item, source=source)]
            except ClearbenchError as exc:
                problems.report(f"entry point {ep_name}", f"bad card {item.get('name', '?')!r}: {exc}")
                found = []
        for card in found:
            if card.name in cat.cards:
                problems.report(
                    card.path or f"entry point {ep_name}",
                    f"card '{card.name}' already exists ({cat.cards[card.name].source}); plugin card ignored",
                    severity="warning",
                )
            else:
                cat.cards[card.name] = card
    for card in read_folder(user_card_dir("encoders"), "user"):
        previous = cat.cards.get(card.name)
        overrides = None if previous is None else f"{previous.source} card {previous.path or previous.name}"
        cat.cards[card.name] = card if overrides is None else replace(card, overrides=overrides)
    return cat


def list_cards(problems: ProblemLog | None = None) -> list[EncoderCard]:
    """Every usable card, sorted by name. Bad card files go to ``problems`` (default: a Python warning)."""
    log = problems if problems is not None else ProblemLog(on_problem=_warn)
    return sorted(_catalogue(log).cards.values(), key=lambda c: c.name)


def get_card(name: str) -> EncoderCard:
    """The card called ``name``; an unknown name lists close matches, a broken card file says what is wrong."""
    cat = _catalogue(ProblemLog())
    if name in cat.bad_files:  # e.g. a broken user card meant to override a built-in: never fall back silently
        raise cat.bad_files[name]
    if name in cat.cards:
        return cat.cards[name]
    close = difflib.get_close_matches(name, list(cat.cards), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known encoders: {', '.join(sorted(cat.cards))}"
    raise ClearbenchError(f"unknown encoder '{name}'{hint} (see `clearbench encoders`)")


# -- status (for the CLI) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderStatus:
    """What ``clearbench encoders`` shows for one card, worked out without loading any weights."""

    card: EncoderCard
    kind: str | None
    dim: int | None
    weights: WeightsLocation
    missing_extra: str | None
    problem: str | None  # unknown family or bad parameters: the card cannot be used as it stands
    sha256: str | None = None  # the file's digest, when asked for
    sha256_status: str = "not checked"  # verified | mismatch | not declared | not checked | random | none | no file

    @property
    def install(self) -> str | None:
        return f"pip install 'clearbench[{self.missing_extra}]'" if self.missing_extra else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.card.name,
            "paper_name": self.card.paper_name,
            "family": self.card.family,
            "kind": self.kind,
            "dim": self.dim,
            "source": self.card.source,
            "file": str(self.card.path) if self.card.path else None,
            "overrides": self.card.overrides,
            "weights_found": self.weights.found,
            "weights_path": self.weights.tried[0]
            if (self.weights.random or self.weights.none)
            else (str(self.weights.path) if self.weights.path else None),
            "weights_looked_in": list(self.weights.tried),
            "missing_extra": self.missing_extra,
            "install": self.install,
            "problem": self.problem,
            "sha256": self.sha256,
            "sha256_status": self.sha256_status,
        }


def encoder_status(card: EncoderCard, check_sha256: bool = False) -> EncoderStatus:
    """Kind, dim, weights found, missing extra; with ``check_sha256`` the file is hashed (cached) and checked."""
    kind = dim = missing = problem = None
    try:
        family = get_family(card.family)
        kind, missing = family.kind, family.missing_extra()
        params, _ = resolve_card(family, card)
        dim = card.dim if card.dim is not None else family.output_dim(params)
        _check_weights_kind(family, card)
        if card.weights.random and dim is None:
            raise ClearbenchError(
                f'weights = "random:{card.weights.seed}" builds the model from the card alone, but family '
                f"'{card.family}' takes its size from a checkpoint: name its variant (or its dims) in the card's [params]"
            )
    except ClearbenchError as exc:
        problem = str(exc)
    except ImportError as exc:
        problem = f"family '{card.family}' cannot be imported: {exc}"
    location = _locate(card)
    digest, status = None, "not checked"
    if location.random or location.none:
        status = location.tried[0].partition(":")[0]
    elif location.path is None:
        status = "no file"
    elif check_sha256:
        from clearbench.encoders.weights import file_sha256

        try:
            digest = files_sha256(weight_files(location.path)) if location.path.is_dir() else file_sha256(location.path)
        except InputError as exc:
            return EncoderStatus(card, kind, dim, location, missing, problem or str(exc), None, "no file")
        expected = card.weights.sha256
        status = "not declared" if expected is None else ("verified" if digest == expected else "mismatch")
    return EncoderStatus(card, kind, dim, location, missing, problem, digest, status)


def _locate(card: EncoderCard) -> WeightsLocation:
    """Where a card's weights are: its family's model folder lookup when it has one, else the file lookup."""
    if not (card.weights.random or card.weights.none):
        try:
            folder = get_family(card.family).locate_model_folder(card)
        except (ClearbenchError, ImportError):
            folder = None
        if folder is not None:
            return folder
    return locate_weights(card)


# -- loading -----------------------------------------------------------------------------------------
def load_encoder(name: str, device: str = "cpu", trust_checkpoint: bool = False) -> Encoder:
    """The encoder of card ``name``, ready to embed, with its provenance.

    Never touches the network. Weights are verified against the card's sha256 (when it has one) before they
    are read, read without pickle unless ``trust_checkpoint``, and loaded strictly.
    """
    return load_card(get_card(name), device, trust_checkpoint)


def load_card(card: EncoderCard, device: str = "cpu", trust_checkpoint: bool = False) -> Encoder:
    """The encoder a card describes (see :func:`load_encoder`); for cards that are not registered, such as
    the random variant ``clearbench encoders check`` builds."""
    from clearbench.version import __version__

    family = get_family(card.family)
    family.require_extra()
    params, preprocessing = resolve_card(family, card)
    where = _where(card)
    try:
        _check_weights_kind(family, card)
    except ClearbenchError as exc:
        raise InputError(where, str(exc)) from exc
    digest: str | None
    if card.weights.none:
        source, digest = "none", None
        model = family.build(params)
    elif card.weights.random:
        source, digest = f"random:{card.weights.seed}", None
        with seeded(card.weights.seed):
            model = family.build(params)
    elif family.locate_model_folder(card) is not None:
        folder = require_model_folder(card)
        with seeded(0):  # anything the folder does not hold (non-persistent buffers) is still reproducible
            model, params, files = family.load_model_folder(folder, params)
        digest = verify_folder_sha256(folder, files, card.weights.sha256)
        source = str(folder)
    else:
        path = require_weights(card)
        from_file, digest = load_verified(path, card.weights.sha256, trust_checkpoint)
        state = family.adapt_state_dict(from_file, params)
        params = family.infer_params(state, params)
        with seeded(0):  # anything the checkpoint does not hold (non-persistent buffers) is still reproducible
            model = family.build(params)
        load_strict(model, state, path, file_names=getattr(from_file, "file_names", None))
        source = str(path)

    try:
        preprocessing = family.complete_preprocessing(model, params, preprocessing)
    except ClearbenchError as exc:
        raise InputError(where, str(exc)) from exc
    dim = family.output_dim(params)
    if dim is None:
        raise ClearbenchError(f"family '{family.name}' could not tell the embedding dim of '{card.name}'")
    if card.dim is not None and card.dim != dim:
        raise InputError(
            where,
            f"the card says dim = {card.dim} but the model gives {dim}-d embeddings; "
            "fix the card's dim or [params], or check the weights file",
        )
    provenance = {
        "encoder": card.name,
        "family": family.name,
        "kind": family.kind,
        "dim": dim,
        "card": card.to_dict(),
        "params": _jsonable(params),
        "preprocessing": _jsonable(preprocessing),
        "preprocessing_hash": preprocessing_hash(family.name, preprocessing),
        "weights": source,
        "weights_sha256": digest,
        "clearbench_version": __version__,
    }
    spec = EncoderSpec(card.name, dim, params, preprocessing, device, provenance)
    encoder = family.wrap(model, spec)
    if encoder.kind != family.kind:
        raise ClearbenchError(
            f"family '{family.name}' declares kind {family.kind} but wrapped a {encoder.kind} encoder"
        )
    return encoder


def resolve_card(family: Family, card: EncoderCard) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's ``[params]`` and ``[preprocessing]`` over ``family``'s defaults.

    A key or value the family refuses is one :class:`InputError` naming the card file (``card.toml: field
    'params.bins': expected an integer, got '32'``), as for a card file that does not parse.
    """
    try:
        return family.resolve_params(card.params), family.resolve_preprocessing(card.preprocessing)
    except ClearbenchError as exc:
        raise InputError(_where(card), str(exc)) from exc


def check_card_settings(card: EncoderCard) -> None:
    """Raise the :class:`InputError` of a card whose ``[params]`` or ``[preprocessing]`` its family refuses.

    For the commands about one card (``encoders show``, ``encoders check``), which stop on such a card with
    its one line as they stop on a card file that does not parse. A family that is unknown or cannot be
    imported is left to :func:`encoder_status` and :func:`load_card`, which say so for the card.
    """
    try:
        family = get_family(card.family)
    except (ClearbenchError, ImportError):
        return
    resolve_card(family, card)


def _where(card: EncoderCard) -> Path | str:
    """What an error about the card names: its file, or the card itself when it was not read from one."""
    return card.path or f"encoder card '{card.name}'"


def _check_weights_kind(family: Family, card: EncoderCard) -> None:
    if family.learned == card.weights.none:
        wanted = 'weights = "none"' if not family.learned else 'a weights file or weights = "random"'
        raise ClearbenchError(f"family '{family.name}' needs {wanted}")
    spec = card.weights
    if spec.hf_repo and not spec.hf_file and family.locate_model_folder(card) is None:
        raise ClearbenchError(
            f"family '{family.name}' reads one weights file: [weights] hf_repo needs hf_file (the file inside the repo)"
        )


def preprocessing_hash(family: str, preprocessing: Mapping[str, Any]) -> str:
    """A short digest of everything that shapes the encoder's input, so stores can tell two setups apart."""
    blob = json.dumps({"family": family, "preprocessing": _jsonable(preprocessing)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
