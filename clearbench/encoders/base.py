"""The interface every encoder family implements.

An encoder turns CT into vectors. A *slice* encoder sees windowed 2D slices (float32 in [0, 1], one
channel, any size) and returns one vector per slice; a *volume* encoder sees a whole HU volume and returns
one vector per scan. Each family owns its preprocessing, so callers never need to know that BiomedCLIP
wants CLIP statistics or that CT-CLIP wants 480x480x240.

The two steps are separate on purpose: the embedding pipeline runs :meth:`preprocess` next to the model
(on the GPU for slice encoders) and times :meth:`embed` alone in its benchmark.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from clearbench.scans.scan import Scan

Kind = Literal["slice", "volume"]


class Encoder(ABC):
    """A frozen model with its preprocessing, device handling and provenance."""

    kind: ClassVar[Kind]

    def __init__(
        self,
        name: str,
        dim: int,
        model: nn.Module,
        device: str | torch.device = "cpu",
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.dim = int(dim)
        self.model = model.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.model.to(self.device)
        # Card, weights sha256 (or "random:<seed>"), preprocessing hash and clearbench version.
        self.provenance: dict[str, Any] = dict(provenance or {})

    def to(self, device: str | torch.device) -> Encoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """No autograd; bfloat16 autocast on CUDA, full precision on CPU."""
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    yield
            else:
                yield

    @abstractmethod
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the model on a preprocessed batch; returns ``(n, dim)``."""

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed a preprocessed batch: ``(n, dim)`` float32 on the CPU."""
        with self._inference():
            out = self.forward(batch.to(self.device, non_blocking=True))
        if out.shape != (batch.shape[0], self.dim):
            raise RuntimeError(
                f"encoder {self.name} returned shape {tuple(out.shape)}, expected ({batch.shape[0]}, {self.dim})"
            )
        return out.float().cpu()


class SliceEncoder(Encoder):
    """Embeds 2D slices; one vector per slice."""

    kind: ClassVar[Kind] = "slice"

    @abstractmethod
    def preprocess(self, slices: torch.Tensor) -> torch.Tensor:
        """Windowed slices ``[N, H, W]`` float32 in [0, 1] (on any device) -> the model's input batch."""

    def encode(self, slices: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Preprocess and embed windowed slices in one call: ``[N, H, W]`` -> ``(N, dim)`` float32."""
        x = torch.as_tensor(slices).to(self.device, non_blocking=True)
        return self.embed(self.preprocess(x))


class VolumeEncoder(Encoder):
    """Embeds a whole CT volume; one vector per scan."""

    kind: ClassVar[Kind] = "volume"

    @abstractmethod
    def preprocess(self, scan: Scan) -> torch.Tensor:
        """The family's 3D preprocessing of one HU volume -> a batch of one, on the CPU."""

    def encode(self, scan: Scan) -> torch.Tensor:
        """Preprocess and embed one scan: ``(1, dim)`` float32."""
        return self.embed(self.preprocess(scan))
