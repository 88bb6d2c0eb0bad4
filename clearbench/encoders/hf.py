"""``hf``: any vision model that transformers' ``AutoModel`` loads, from a card alone.

A card points at a model folder (``config.json`` + ``*.safetensors``; a local path or a repo id in the local
Hugging Face cache, never a download) and says how to pool::

    name = "rad-dino"
    family = "hf"
    [weights]
    hf_repo = "microsoft/rad-dino"      # or path = "/models/rad-dino" (a folder), or env = "..."
    [params]
    pooling = "cls"                      # cls | mean (patch tokens only) | pooler

A composite checkpoint (CLIP, SigLIP: ``config.json`` with a ``vision_config``) loads its vision tower only.
The dim is the vision config's ``hidden_size``. Loading is strict where it matters: a missing or wrongly shaped
backbone key is an error; keys the backbone does not use (a classifier, a text tower) are left out, and the
pooler's own keys may be absent unless the card pools with it (``*ForImageClassification`` files have none).

Preprocessing follows the folder's ``preprocessor_config.json`` (resize, centre crop, resample, rescale,
mean and std) applied in torch to the windowed slices, which stand for an 8-bit image scaled to [0, 1]; any
``[preprocessing]`` key of the card (``size``, ``crop``, ``interpolation``, ``mean``, ``std``, ``channels``;
``0`` turns resize or crop off) wins. Without a processor config: an exact resize to ``config.image_size``
with ImageNet statistics.

``weights = "random:<seed>"`` builds the architecture from ``[params] config`` (``model_type`` plus any
config fields), which is how the tests and ``clearbench encoders check`` run tiny variants.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from clearbench.encoders.base import SliceEncoder
from clearbench.encoders.card import EncoderCard
from clearbench.encoders.family import EncoderSpec, Family
from clearbench.encoders.image import IMAGENET_MEAN, IMAGENET_STD, ImageSliceEncoder, ImageTransform, overlay_settings
from clearbench.encoders.model_folder import locate_model_folder, weight_files
from clearbench.encoders.weights import WeightsLocation
from clearbench.errors import ClearbenchError, InputError
from clearbench.settings import Settings

POOLINGS = ("cls", "mean", "pooler")
PREPROCESSING_KEYS = ("size", "crop", "interpolation", "mean", "std", "channels")
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes used by image processors
_SHOWN = 5


# -- configs and models ---------------------------------------------------------------------------------
def vision_config(config: Any) -> Any:
    """The vision tower's config of a composite model (CLIP, SigLIP), else the config itself."""
    inner = getattr(config, "vision_config", None)
    return inner if inner is not None else config


def embedding_dim(config: Any) -> int:
    """The pooled embedding width: ``hidden_size``, or the last stage of a multi-stage (``hidden_sizes``) net."""
    config = vision_config(config)
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    size = getattr(config, "hidden_size", None)
    if size is None:
        raise ClearbenchError(
            f"hf: cannot tell the embedding dim of a '{config.model_type}' model (no hidden_size in its config)"
        )
    return int(size)


def build_hf_model(config: Mapping[str, Any]) -> nn.Module:
    """A randomly initialised transformers backbone from config fields (``model_type`` plus overrides).

    Loads the key layout of the matching ``AutoModel`` class (the vision tower's, for composite configs).
    """
    from transformers import AutoModel

    with _quiet():
        return AutoModel.from_config(vision_config(config_from_fields(config))).float()


def config_from_fields(config: Mapping[str, Any]) -> Any:
    """A transformers config from a card's ``[params] config`` table (``model_type`` plus any fields)."""
    from transformers import AutoConfig

    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise ClearbenchError('hf: random init needs [params] config with a model_type (e.g. "dinov2") and its sizes')
    try:
        return AutoConfig.for_model(str(model_type), **fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise ClearbenchError(
            f"hf: transformers {_version()} cannot make a '{model_type}' config ({_first_line(exc)})"
        ) from exc


def load_hf_folder(folder: Path, pooling: str = "cls") -> tuple[nn.Module, list[Path]]:
    """The backbone of a model folder, strictly loaded, float32, and the safetensors files it came from."""
    config = _read_config(folder)
    files = weight_files(folder)
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    vision = vision_config(config)
    try:
        # Any: transformers types every auto mapping's values as its tokenizer pair; this one holds model classes.
        model_class: Any = MODEL_MAPPING[type(vision)]
    except KeyError as exc:
        raise InputError(
            folder, f"transformers has no AutoModel class for '{vision.model_type}' (is it a vision backbone?)"
        ) from exc
    with _quiet():
        try:
            # Mismatched shapes are collected rather than raised, so the error below can list them.
            model, info = model_class.from_pretrained(
                str(folder),
                local_files_only=True,
                use_safetensors=True,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputError(folder, f"transformers could not load the weights ({_first_line(exc)})") from exc
    missing = sorted(k for k in info.get("missing_keys", ()) if pooling == "pooler" or not k.startswith("pooler."))
    mismatched = sorted(_mismatch(k) for k in info.get("mismatched_keys", ()))
    parts = [
        f"{len(keys)} {what} key(s): {', '.join(keys[:_SHOWN])}{' ...' if len(keys) > _SHOWN else ''}"
        for what, keys in (("missing", missing), ("wrongly shaped", mismatched))
        if keys
    ]
    if parts:
        raise InputError(
            folder,
            "weights do not fit the model: " + "; ".join(parts) + " (is config.json the one saved with these weights?)",
        )
    return model.float().eval(), files


def _mismatch(entry: Any) -> str:
    """``key (checkpoint shape) vs model (shape)`` from transformers' ``(key, ckpt_shape, model_shape)`` entry."""
    if isinstance(entry, tuple) and len(entry) == 3:
        return f"{entry[0]} {tuple(entry[1])} vs model {tuple(entry[2])}"
    return str(entry)


def _read_config(folder: Path) -> Any:
    """``AutoConfig`` of a folder; a missing file or an architecture transformers lacks is one clear line."""
    from transformers import AutoConfig

    path = folder / "config.json"
    if not path.is_file():
        raise InputError(
            folder,
            "no config.json: not a transformers model folder (save it with save_pretrained, "
            "or download the whole repo, not only the weights)",
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not readable JSON ({exc})") from exc
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ValueError, KeyError) as exc:
        custom = (
            " it needs the model's own Python code (auto_map), which clearbench never runs;"
            if isinstance(raw, dict) and raw.get("auto_map")
            else ""
        )
        raise InputError(
            folder,
            f"transformers {_version()} does not know the architecture '{model_type}';{custom} "
            "upgrade transformers or use a model it supports",
        ) from exc


def _version() -> str:
    import transformers

    return transformers.__version__


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' load reports and progress bars would break the CLI's tables; errors still surface."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# -- preprocessing ----------------------------------------------------------------------------------
def processor_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``preprocessor_config.json`` as :class:`ImageTransform` settings, for slices in [0, 1].

    The processor sees an 8-bit image ``v = 255 x``, optionally rescales it by ``rescale_factor`` and normalises
    with ``image_mean``/``image_std``; in terms of ``x`` that is a normalisation with mean and std divided by
    ``255 * rescale_factor`` (or 255 when it does not rescale), so any processor maps onto one transform.
    """
    settings: dict[str, Any] = {"size": None, "crop": None}
    size = raw.get("size")
    if raw.get("do_resize", True) and size is not None:
        if isinstance(size, int):
            settings["size"] = size
        elif isinstance(size, Mapping) and "shortest_edge" in size:
            settings["size"] = int(size["shortest_edge"])
        elif isinstance(size, Mapping) and {"height", "width"} <= set(size):
            settings["size"] = [int(size["height"]), int(size["width"])]
        else:
            raise ClearbenchError(
                f"processor size {size!r} is not a shortest edge or a height and width; "
                "set [preprocessing] size in the card"
            )
    crop = raw.get("crop_size")
    if raw.get("do_center_crop", False) and crop is not None:
        if isinstance(crop, Mapping):
            if crop.get("height") != crop.get("width"):
                raise ClearbenchError(f"processor crop {crop!r} is not square; set [preprocessing] crop in the card")
            crop = crop["height"]
        settings["crop"] = int(crop)
    resample = raw.get("resample", 2)
    if resample not in _RESAMPLE:
        raise ClearbenchError(
            f"processor resample {resample!r} (PIL code) has no torch equivalent here; "
            "set [preprocessing] interpolation in the card (bilinear, bicubic, nearest, area)"
        )
    settings["interpolation"] = _RESAMPLE[resample]
    mean = [float(m) for m in raw.get("image_mean", IMAGENET_MEAN)]
    std = [float(s) for s in raw.get("image_std", IMAGENET_STD)]
    if not raw.get("do_normalize", True):
        mean, std = [0.0] * len(mean), [1.0] * len(std)
    scale = 255.0 * float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 255.0
    settings["mean"] = [m / scale for m in mean]
    settings["std"] = [s / scale for s in std]
    settings["channels"] = len(mean)
    return settings


def read_processor(folder: Path) -> dict[str, Any] | None:
    """The folder's ``preprocessor_config.json`` as transform settings, or None when it has none."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not readable JSON ({exc})") from exc
    try:
        return processor_settings(raw)
    except ClearbenchError as exc:
        raise InputError(path, str(exc)) from exc


def default_settings(config: Any) -> dict[str, Any]:
    """Preprocessing for a model without a processor config: exact resize to its image size, ImageNet stats."""
    config = vision_config(config)
    side = int(getattr(config, "image_size", 224))
    channels = int(getattr(config, "num_channels", 3))
    mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if channels == 3 else ([0.5] * channels, [0.5] * channels)
    return {
        "size": [side, side],
        "crop": None,
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
        "channels": channels,
    }


# -- the encoder ------------------------------------------------------------------------------------
class HfSliceEncoder(ImageSliceEncoder):
    """A transformers backbone pooled to one vector per slice (CLS token, mean of patch tokens, or pooler)."""

    def __init__(self, spec: EncoderSpec, model: nn.Module, transform: ImageTransform, pooling: str) -> None:
        super().__init__(spec, model, transform)
        self.pooling = pooling
        self.patch_size = getattr(vision_config(model.config), "patch_size", None)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=batch)
        if self.pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ClearbenchError(
                    f'encoder {self.name}: the model has no pooler output; use pooling = "cls" or "mean"'
                )
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        if hidden.ndim == 4:  # a convolutional backbone: [n, C, h, w]
            if self.pooling == "cls":
                raise ClearbenchError(
                    f'encoder {self.name}: a convolutional model has no CLS token; use pooling = "mean"'
                )
            return hidden.mean(dim=(2, 3))
        prefix = self._prefix_tokens(hidden.shape[1], batch.shape[-2:])
        if self.pooling == "cls":
            if not prefix:
                raise ClearbenchError(
                    f"encoder {self.name}: the model has no CLS token (its tokens are all patches); "
                    'use pooling = "mean" or "pooler"'
                )
            return hidden[:, 0]
        return hidden[:, prefix or 0 :].mean(dim=1)

    def _prefix_tokens(self, n_tokens: int, image: torch.Size) -> int | None:
        """CLS and register tokens before the patches; None when the layout cannot be told (no patch size)."""
        if not self.patch_size:
            return None
        p = self.patch_size if isinstance(self.patch_size, int) else self.patch_size[0]
        extra = n_tokens - (int(image[0]) // p) * (int(image[1]) // p)
        return extra if 0 <= extra < n_tokens else None


class HfParams(Settings):
    """An ``hf`` card's ``[params]``."""

    pooling: str = "cls"  # one of POOLINGS
    # model_type plus any config fields: the architecture of a random init (a model folder has its own)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("pooling")
    @classmethod
    def _known_pooling(cls, value: str) -> str:
        if value not in POOLINGS:
            raise ValueError(f"pooling {value!r} is not one of {', '.join(POOLINGS)}")
        return value


class HfFamily(Family):
    name: ClassVar[str] = "hf"
    kind: ClassVar = "slice"
    params_model: ClassVar[type[Settings]] = HfParams
    default_preprocessing: ClassVar[Mapping[str, Any]] = {k: None for k in PREPROCESSING_KEYS}

    def locate_model_folder(self, card: EncoderCard) -> WeightsLocation | None:
        return locate_model_folder(card)

    def load_model_folder(
        self, folder: Path, params: Mapping[str, Any]
    ) -> tuple[nn.Module, dict[str, Any], list[Path]]:
        if params["config"]:
            raise InputError(
                folder, "[params] config only shapes a random init; a model folder has its own config.json"
            )
        model, files = load_hf_folder(folder, str(params["pooling"]))
        config = vision_config(model.config)
        loaded = {
            **params,
            "model_type": config.model_type,
            "dim": embedding_dim(model.config),
            "processor": read_processor(folder),
        }
        return model, loaded, files

    def build(self, params: Mapping[str, Any]) -> nn.Module:
        return build_hf_model(params["config"])

    def output_dim(self, params: Mapping[str, Any]) -> int | None:
        if params.get("dim") is not None:
            return int(params["dim"])
        config = params.get("config") or {}
        return embedding_dim(config_from_fields(config)) if config else None

    def complete_preprocessing(
        self, model: nn.Module, params: Mapping[str, Any], preprocessing: Mapping[str, Any]
    ) -> dict[str, Any]:
        return overlay_settings(params.get("processor") or default_settings(model.config), preprocessing)

    def wrap(self, model: nn.Module, spec: EncoderSpec) -> SliceEncoder:
        return HfSliceEncoder(
            spec, model, ImageTransform.from_settings(spec.preprocessing), str(spec.params["pooling"])
        )
