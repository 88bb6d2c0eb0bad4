"""An environment report, so that a bug report or a cluster job log says what was actually installed."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from typing import Any

from clearbench.config import config_path, dataset_roots, home, store_path
from clearbench.version import __version__

# extra name -> (import name, what it enables)
EXTRAS: dict[str, tuple[str, str]] = {
    "sam2": ("sam2", "SAM2 Hiera image encoder"),
    "merlin": ("merlin", "Merlin I3ResNet-152 volume encoder"),
    "cuda": ("mamba_ssm", "mamba-ssm CUDA selective-scan kernel for VMamba"),
}


def extra_installed(extra: str) -> bool:
    """Whether an optional extra's package is installed; found without importing it (mamba-ssm crashes on CPU)."""
    module, _ = EXTRAS[extra]
    return find_spec(module) is not None


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def report() -> dict[str, Any]:
    """Versions, devices, extras and locations, as plain data."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "clearbench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "packages": {
            name: _pkg_version(name)
            for name in (
                "timm",
                "open_clip_torch",
                "lancedb",
                "pyarrow",
                "polars",
                "pydicom",
                "nibabel",
                "scikit-learn",
            )
        },
        "extras": {
            extra: {
                "installed": extra_installed(extra),
                "enables": what,
                "install": f"pip install 'clearbench[{extra}]'",
            }
            for extra, (_, what) in EXTRAS.items()
        },
        "home": str(home()),
        "config": str(config_path()) if config_path().is_file() else None,
        "store": str(store_path()),
        "dataset_roots": {name: str(path) for name, path in dataset_roots().items()},
    }
