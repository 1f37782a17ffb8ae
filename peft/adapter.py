"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020)."""

import dataclasses

import flax.linen as nn
import jax

# Activations by their Hugging Face names (bertjax's encoders use this table too).
ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),  # BERT's exact erf GELU
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
    "swish": nn.swish,
    "silu": nn.swish,
    "tanh": nn.tanh,
}

# kind -> where adapters sit in each transformer layer.
PLACEMENTS = {
    "houlsby": ("attention", "ffn"),  # after the attention output and the FFN output projections
    "pfeiffer": ("ffn",),  # after the FFN output projection only
}


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
    kind: str = "houlsby"
    reduction_factor: int = 16
    activation: str = "gelu"

    def __post_init__(self):
        if self.kind not in PLACEMENTS:
            raise ValueError(
                f"adapter kind {self.kind!r} unknown; choose from {sorted(PLACEMENTS)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"adapter activation {self.activation!r} unknown; choose from {sorted(ACTIVATIONS)}"
            )
        if int(self.reduction_factor) != self.reduction_factor or self.reduction_factor < 1:
            raise ValueError(
                f"reduction_factor must be an integer >= 1, got {self.reduction_factor!r}"
            )

    def bottleneck(self, hidden_size: int) -> int:
        if hidden_size % self.reduction_factor:
            raise ValueError(
                f"adapter reduction_factor {self.reduction_factor} does not divide "
                f"hidden size {hidden_size}"
            )
        return hidden_size // self.reduction_factor

    def placed_after(self, sublayer: str) -> bool:
        """sublayer: "attention" or "ffn"."""
        return sublayer in PLACEMENTS[self.kind]


class Adapter(nn.Module):
    """x + up(act(down(x))): params `down/{kernel,bias}` [H, m], `up/{kernel,bias}` [m, H].

    `up` starts at zero, so a freshly inserted adapter is the identity.
    """

    config: AdapterConfig
    dtype: jax.typing.DTypeLike | None = None

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        size = hidden.shape[-1]
        down = nn.Dense(
            self.config.bottleneck(size),
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(1e-2),
            name="down",
        )
        up = nn.Dense(size, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="up")
        return hidden + up(ACTIVATIONS[self.config.activation](down(hidden)))
