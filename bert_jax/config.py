"""Model hyperparameters: a frozen dataclass, kept apart from the run configuration.

The run configuration (``configs/*.py``, an ``ml_collections.ConfigDict``) names a size and overrides;
``ModelConfig.from_size`` turns that into the immutable object the network is built from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# name -> (layers, hidden, heads, intermediate). Figures from the BERT paper and Turc et al. (2019).
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 512),
    "mini": (4, 256, 4, 1024),
    "small": (4, 512, 8, 2048),
    "medium": (8, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
# ``attention_impl`` values; ``bert_jax.attention`` says what each runs (None is "auto").
ATTENTION_IMPLS = ("auto", "fused", "reference", "xla", "cudnn", "splash")

# ModelConfig fields that describe how to run, not what was trained: a run's config.model sets them even
# when the checkpoint it starts from names the architecture.
RUNTIME_MODEL_FIELDS = ("dtype", "param_dtype", "hidden_dropout", "attention_dropout", "scan_layers", "remat",
                        "attention_impl")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of an encoder and its pretraining heads.

    Attributes:
      architecture: the encoder architecture (``bert_jax.models`` registry: ``"bert"``, ...).
      vocab_size: number of WordPiece/SentencePiece ids (30,522 for BERT uncased).
      hidden_size: width of the residual stream.
      num_layers: number of Transformer layers.
      num_heads: attention heads per layer; must divide ``hidden_size``.
      intermediate_size: width of the feed-forward block.
      hidden_act: ``"gelu"`` (exact erf form, BERT's), ``"gelu_tanh"`` (approximation) or ``"relu"``.
      hidden_dropout: dropout on embeddings and on each sub-layer output.
      attention_dropout: dropout on the attention probabilities.
      max_position_embeddings: number of learned positions (512).
      type_vocab_size: number of segment (token type) ids (2).
      layer_norm_eps: LayerNorm epsilon (1e-12).
      initializer_range: std of the truncated-normal initialiser (0.02).
      dtype: compute dtype name (``"float32"`` or ``"bfloat16"``); parameters stay ``param_dtype``.
      param_dtype: parameter dtype name (``"float32"``).
      scan_layers: run the layer stack with ``nn.scan`` (one compiled layer; faster compiles).
      remat: rematerialise each layer's activations in the backward pass (saves memory).
      attention_impl: the attention implementation asked for (``bert_jax.attention``): ``None``/``"auto"``
        (``"splash"`` on TPU for rows of a multiple of 128 tokens, else ``"fused"``), ``"fused"``
        (``jax.nn.dot_product_attention`` picks cuDNN or XLA), ``"xla"``, ``"cudnn"``, ``"splash"`` (Pallas
        TPU kernel with segment ids), or ``"reference"`` (einsums, ``[B, N, S, S]`` materialised). Training with ``attention_dropout > 0``
        runs ``"reference"`` whatever is asked: the fused kernels have no attention dropout.
    """

    architecture: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False
    remat: bool = False
    attention_impl: str | None = None

    def __post_init__(self):
        from bert_jax import models  # the registry imports this module

        if self.architecture not in models.names():
            raise ValueError(f"model.architecture={self.architecture!r}; expected one of {list(models.names())}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"model.hidden_act={self.hidden_act!r}; expected one of {ACTIVATIONS}")
        if self.attention_impl is not None and self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"model.attention_impl={self.attention_impl!r}; expected None or one of {ATTENTION_IMPLS}")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                raise ValueError(f"model.{field}={getattr(self, field)!r}; expected one of {sorted(_DTYPES)}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    @property
    def parameter_dtype(self) -> Any:
        return _DTYPES[self.param_dtype]

    @classmethod
    def from_size(cls, size: str, **overrides: Any) -> "ModelConfig":
        """Builds the config of a named size (``tiny`` ... ``large``) with field overrides."""
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; expected one of {sorted(MODEL_SIZES)}")
        layers, hidden, heads, intermediate = MODEL_SIZES[size]
        fields = dict(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=intermediate)
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def non_embedding_params(self) -> int:
        """Parameters in the Transformer layers (weights and biases), excluding embeddings and heads."""
        h, i = self.hidden_size, self.intermediate_size
        attention = 4 * (h * h + h) + 2 * h
        ffn = h * i + i + i * h + h + 2 * h
        return self.num_layers * (attention + ffn)

    def train_flops_per_token(self, seq_len: int, max_predictions: int) -> float:
        """Matmul FLOPs per token for forward + backward (docs/benchmarks.md, "FLOPs and MFU").

        6 x non-embedding params + 12 x layers x seq x hidden (attention scores and values) + the
        masked-position MLM head (transform and vocabulary projection) for ``max_predictions`` per
        sequence, spread over the sequence's tokens.
        """
        h, v = self.hidden_size, self.vocab_size
        head = (max_predictions / seq_len) * 6 * (h * h + h * v)
        return 6 * self.non_embedding_params() + 12 * self.num_layers * seq_len * h + head
