"""Each head's parameters, their types, bounds and defaults: the one place they are declared.

Task cards validate their ``[heads.slice]`` / ``[heads.volume]`` tables against these models, and the head
modules (:mod:`clearbench.mil.heads`) take their keyword defaults from them, so a default changed here
changes both. The defaults are the paper's code: 256-d hidden and attention layers, dropout 0.5. Kept free
of torch so that reading a card does not import it.
"""

from __future__ import annotations

from pydantic import Field

from clearbench.settings import Settings


class ABMILParams(Settings):
    """Attention-MIL (Ilse et al. 2018) for bags of slice embeddings."""

    hidden: int = Field(
        default=256, ge=1, description="Width of the instance projection and the classifier's hidden layer."
    )
    attention_dim: int = Field(default=256, ge=1, description="Width of the attention network.")
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0, description="Dropout before the classifier's activation.")
    gated: bool = Field(default=False, description="Gated attention: tanh(V h) * sigmoid(U h).")


class MLPParams(Settings):
    """The head for volume encoders, which give one vector per scan."""

    hidden: int = Field(default=256, ge=1, description="Width of the classifier's hidden layer.")
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0, description="Dropout before the classifier's activation.")


# Head name (as a task card writes it) -> its parameters.
HEAD_MODELS: dict[str, type[ABMILParams | MLPParams]] = {"abmil": ABMILParams, "mlp": MLPParams}
