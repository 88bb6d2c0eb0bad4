"""The contract an encoder family implements, and how families are registered.

A *family* is the code for one architecture (MambaOut, VMamba, CT-CLIP ...). A *card* (``encoders/*.toml``)
points a family at weights and parameters. The registry (:mod:`clearbench.encoders.registry`) reads the card,
then drives the family through these steps, in this order::

    family.require_extra()                                 # MissingExtraError when its backend is absent
    params = family.resolve_params(card.params)            # checked by params_model, over its defaults
    prep   = family.resolve_preprocessing(card.preprocessing)
    # with weights in one state-dict file:
    sd     = weights.read_state_dict(path)                 # torch.load(weights_only=True) + common containers
    sd     = family.adapt_state_dict(sd, params)           # the family's prefixes, heads, key renames
    params = family.infer_params(sd, params)               # architecture dims read from the checkpoint
    model  = family.build(params)
    weights.load_strict(model, sd)                         # missing/unexpected keys are an error
    # with weights in a model folder (a family whose locate_model_folder answers, e.g. ``hf``):
    model, params, files = family.load_model_folder(folder, params)   # the registry hashes ``files``
    # without weights (``weights = "random"``): model = family.build(params) under seeded(seed);
    # a family that learns nothing (``learned = False``, card ``weights = "none"``) is just built.
    prep    = family.complete_preprocessing(model, params, prep)   # what the model itself says, card wins
    encoder = family.wrap(model, EncoderSpec(...))         # a SliceEncoder or VolumeEncoder

So a family never touches files, hashes or provenance, and the registry never knows an architecture. The
design follows scikit-learn's estimator contract: class attributes declare what a family is, a few small
methods do one thing each, and every method has a sensible default except :meth:`Family.build` and
:meth:`Family.wrap` (the latter is provided by :class:`clearbench.encoders.image.ImageSliceFamily` for the
usual 2D case).

Rules for a family module (``clearbench/encoders/<family>.py``):

- It must import without its optional extra: import the backend inside :meth:`Family.build`, and declare
  ``extra``/``extra_modules`` so the registry can say ``pip install 'clearbench[<extra>]'`` up front.
- It exposes a plain function that builds the bare backbone from keyword arguments and says in its docstring
  which state-dict key layout that backbone loads.
- It may declare ``pretrain_variants`` (see :class:`Family`): ``clearbench pretrain --arch <name>`` then
  builds each size through :meth:`Family.build` and exports :meth:`Family.export_state_dict`, so the trained
  card loads like any other.
- ``build`` draws random weights from torch's global generator; the registry seeds it (see :func:`seeded`),
  so a random-init encoder is reproducible.
- It passes :func:`clearbench.encoders.conformance.check_card` (``clearbench encoders check NAME``): the
  output is ``(n, dim)`` float32 and finite, a batch gives what its items give one by one, a second call gives
  the same, nothing touches the network, and the provenance is complete.

Registration:

- Built-in families are listed in :data:`BUILTIN_FAMILIES` as ``name -> "module:Class"`` and imported only
  when used, so listing cards does not import sam2 or build models.
- Another package adds families and cards through the entry-point group ``clearbench.encoders``. The target
  is either a :class:`Family` subclass, or a function taking no arguments that returns a list whose items are
  :class:`Family` subclasses, card tables (``dict``, the TOML content) or paths to card ``.toml`` files or
  folders of them. Plugins may add names but never replace built-in families or cards.

A complete worked example (a family, its cards shipped as package data, the entry point, and how to install
and load it) is the README's "A new architecture, as a package of your own"; ``tests/test_readme.py``
installs it from the README and loads it, so the recipe cannot drift from what works.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import create_model
from torch import nn

from clearbench.encoders.base import Encoder, Kind
from clearbench.errors import ClearbenchError, MissingExtraError
from clearbench.settings import Settings, validate_settings

if TYPE_CHECKING:  # weights.py imports this module
    from clearbench.encoders.card import EncoderCard
    from clearbench.encoders.weights import WeightsLocation

StateDict = dict[str, torch.Tensor]

ENTRY_POINT_GROUP = "clearbench.encoders"

# Built-in families, imported only when used: name -> "module:Class".
BUILTIN_FAMILIES: dict[str, str] = {
    "hu-hist": "clearbench.encoders.hu_hist:HuHistFamily",
    "mambaout": "clearbench.encoders.mambaout:MambaOutFamily",
    "biomedclip": "clearbench.encoders.biomedclip:BiomedCLIPFamily",
    "vmamba": "clearbench.encoders.vmamba:VMambaFamily",
    "vit-convb": "clearbench.encoders.vit_convb:ViTConvBFamily",
    "ctclip": "clearbench.encoders.ctclip:CTCLIPFamily",
    "sam2": "clearbench.encoders.sam2:SAM2Family",
    "merlin": "clearbench.encoders.merlin:MerlinFamily",
    "hf": "clearbench.encoders.hf:HfFamily",
    "timm": "clearbench.encoders.timm_family:TimmFamily",
}


@dataclass(frozen=True)
class EncoderSpec:
    """Everything :meth:`Family.wrap` needs besides the module: resolved by the registry from the card."""

    name: str
    dim: int
    params: dict[str, Any]
    preprocessing: dict[str, Any]
    device: str | torch.device = "cpu"
    provenance: dict[str, Any] = field(default_factory=dict)


class Family(ABC):
    """One architecture: how to build it, read its checkpoints and wrap it as an :class:`Encoder`.

    Class attributes (declare them; the defaults suit a family with no extra and flat checkpoints):

    - ``name``: the value of ``family`` in a card.
    - ``kind``: ``"slice"`` (one vector per 2D slice) or ``"volume"`` (one vector per scan).
    - ``extra`` / ``extra_modules``: the optional extra that provides the backend and the modules it
      installs (checked with ``find_spec``, so nothing is imported to list cards).
    - ``prefixes``: published checkpoints keep the backbone under one of these prefixes (``"visual."``); when
      any key has one, only those keys are kept and the prefix is stripped. Tried in order.
    - ``heads``: key prefixes (after stripping) of heads the encoder does not use; they are dropped.
    - ``params_model``: a :class:`clearbench.settings.Settings` model of every parameter a card's
      ``[params]`` may set, typed, with its default. A card naming another key, or giving a value of another
      type, is refused in one line (``field 'params.bins': expected an integer, got '32'``), so a typo never
      silently falls back to a default. ``default_params`` is derived from it (``params_model().model_dump()``)
      so each default is written once; declare the model, not the dict. A family written before
      ``params_model`` may still declare ``default_params`` alone: its keys are then checked, not its types.
    - ``default_preprocessing``: every preprocessing setting the family accepts, with its default; a card
      naming another is refused the same way (the values are the family's to check: their types vary with
      the setting, such as a size that is a number or a pair).
    - ``learned``: False for a family with no weights at all (``hu-hist``); its cards say ``weights = "none"``.
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    extra: ClassVar[str | None] = None
    extra_modules: ClassVar[tuple[str, ...]] = ()
    prefixes: ClassVar[tuple[str, ...]] = ()
    heads: ClassVar[tuple[str, ...]] = ()
    params_model: ClassVar[type[Settings]] = Settings  # no parameters
    default_params: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    default_preprocessing: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    learned: ClassVar[bool] = True
    # The keys of default_preprocessing as a model, so an unknown one gets the same line as a parameter.
    _preprocessing_model: ClassVar[type[Settings]] = Settings

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive ``default_params`` from ``params_model`` (or, for a family that declares only the dict, a
        model of its keys), so the two cannot disagree."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "params_model" in own and "default_params" in own:
            raise TypeError(f"{cls.__name__}: declare params_model only; default_params is derived from it")
        if "params_model" in own:
            cls.default_params = MappingProxyType(cls.params_model().model_dump())
        elif "default_params" in own:
            cls.params_model = _keys_model(f"{cls.__name__}Params", cls.default_params)
        if "default_preprocessing" in own:
            cls._preprocessing_model = _keys_model(f"{cls.__name__}Preprocessing", cls.default_preprocessing)

    # -- optional backend ------------------------------------------------------------------------------
    def missing_extra(self) -> str | None:
        """The extra to install when one of ``extra_modules`` is not importable, else None."""
        if self.extra is None:
            return None
        return self.extra if any(find_spec(m) is None for m in self.extra_modules) else None

    def require_extra(self) -> None:
        """Raise :class:`MissingExtraError` (naming the pip command) when the backend is absent."""
        extra = self.missing_extra()
        if extra is not None:
            raise MissingExtraError(extra, f"encoder family '{self.name}'")

    # -- parameters and preprocessing ----------------------------------------------------------------------
    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The card's parameters over the family defaults, validated by ``params_model``.

        A bad one is a :class:`ClearbenchError` of one line naming ``params.<key>`` and what was expected (the
        registry adds the card file). The values come back as the card wrote them, since validation only checks:
        a strict model still turns an integer given for a number into a float, which would change the params
        recorded in the provenance of a card that has not changed.
        """
        checked = validate_settings(self.params_model, dict(params), None, prefix=("params",))
        return {**checked.model_dump(), **params}

    def resolve_preprocessing(self, preprocessing: Mapping[str, Any]) -> dict[str, Any]:
        """The card's preprocessing over the family defaults; an unknown name is refused as in ``resolve_params``."""
        validate_settings(self._preprocessing_model, dict(preprocessing), None, prefix=("preprocessing",))
        return {**self.default_preprocessing, **preprocessing}

    def output_dim(self, params: Mapping[str, Any]) -> int | None:
        """The embedding dim for these resolved params; None when only a checkpoint can tell."""
        dim = params.get("dim")
        return int(dim) if dim is not None else None

    # -- checkpoints -----------------------------------------------------------------------------------
    def adapt_state_dict(self, state_dict: StateDict, params: Mapping[str, Any]) -> StateDict:
        """Turn a published checkpoint (after the generic container unwrapping) into the module's keys.

        The default keeps the keys under the first matching ``prefixes`` entry (prefix stripped) and drops
        ``heads``. Override it to rename keys as well (and call ``super()`` for the prefix/head part).
        """
        for prefix in self.prefixes:
            if any(k.startswith(prefix) for k in state_dict):
                state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
                break
        if self.heads:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(self.heads)}
        return state_dict

    def infer_params(self, state_dict: StateDict, params: Mapping[str, Any]) -> dict[str, Any]:
        """Read architecture dims from the (adapted) checkpoint where the family can; default: none."""
        return dict(params)

    # -- weights that are a model folder, not one state-dict file --------------------------------------
    def locate_model_folder(self, card: EncoderCard) -> WeightsLocation | None:
        """Where a card's model folder is (config and weights together), for families that load whole folders.

        None (the default) means the card names one state-dict file, found by the registry's usual lookup.
        A family that answers here must implement :meth:`load_model_folder`.
        """
        return None

    def load_model_folder(
        self, folder: Path, params: Mapping[str, Any]
    ) -> tuple[nn.Module, dict[str, Any], list[Path]]:
        """The module loaded from ``folder``, the params completed from it, and the weights files it read."""
        raise NotImplementedError(f"family '{self.name}' does not load model folders")

    def complete_preprocessing(
        self, model: nn.Module, params: Mapping[str, Any], preprocessing: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Fill the settings the card left unset from what the built model knows (timm's ``pretrained_cfg``,
        a processor config); the default keeps the resolved preprocessing as it is. Runs before the provenance
        is written, so the preprocessing hash covers what the encoder really does."""
        return dict(preprocessing)

    # -- the module and the encoder ------------------------------------------------------------------
    @abstractmethod
    def build(self, params: Mapping[str, Any]) -> nn.Module:
        """The bare backbone for resolved ``params``, randomly initialised from torch's global generator."""

    @abstractmethod
    def wrap(self, model: nn.Module, spec: EncoderSpec) -> Encoder:
        """The module with this family's preprocessing, as a ready :class:`SliceEncoder`/:class:`VolumeEncoder`."""

    # -- pretraining (``clearbench pretrain``), for families that declare it ---------------------------------
    # ``pretrain_variants``: size name -> the card ``[params]`` that build it (none: the family cannot be
    # pretrained); ``pretrain_default``: the size trained when none is asked for; ``pretrain_image_param``: the
    # parameter that takes the training image side, when the module's shape depends on it (a ViT's position
    # embedding), which must then be a multiple of ``pretrain_image_multiple`` (its patch size);
    # ``display_name``: the architecture as papers name it (``MambaOut``), for the trained card's description.
    pretrain_variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    pretrain_default: ClassVar[str | None] = None
    pretrain_image_param: ClassVar[str | None] = None
    pretrain_image_multiple: ClassVar[int] = 1
    display_name: ClassVar[str | None] = None

    def pretrain_params(self, variant: str | None, image_size: int) -> tuple[str, dict[str, Any]]:
        """``(variant, card params)`` of a pretraining size (default: ``pretrain_default``) at ``image_size``.

        The params are what the trained card will say, so ``load_encoder`` rebuilds the trained module."""
        if not self.pretrain_variants:
            raise ClearbenchError(f"encoder family '{self.name}' declares no pretraining variants")
        variant = variant or self.pretrain_default or next(iter(self.pretrain_variants))
        if variant not in self.pretrain_variants:
            known = ", ".join(self.pretrain_variants)
            raise ClearbenchError(f"unknown {self.name} variant '{variant}'; choose one of {known}")
        params = dict(self.pretrain_variants[variant])
        if self.pretrain_image_param is not None:
            if image_size % self.pretrain_image_multiple:
                raise ClearbenchError(
                    f"{self.name} makes {self.pretrain_image_multiple} px patches: --image-size must be a "
                    f"multiple of {self.pretrain_image_multiple}, got {image_size}"
                )
            params[self.pretrain_image_param] = image_size
        return variant, params

    def export_state_dict(self, module: nn.Module) -> StateDict:
        """A trained backbone's weights in the key layout ``build`` + ``load_strict`` read back (on the CPU).

        The default is the module's own state dict: pretraining trains the module ``build`` made, so that is
        the layout by construction. Override it when the trained module and the loaded one differ."""
        return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _keys_model(name: str, defaults: Mapping[str, Any]) -> type[Settings]:
    """A model with the keys of ``defaults``, any values: what a table of untyped defaults can check."""
    fields: dict[str, Any] = {key: (Any, value) for key, value in defaults.items()}
    return create_model(name, __base__=Settings, **fields)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's generators for a random init, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
