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
# ``remat_policy`` values: what a layer keeps for the backward pass (``bert_jax.models.layers.REMAT_POLICIES``
# maps them to ``jax.checkpoint_policies``); None follows the boolean ``remat`` ("full" or "none").
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")

# ModelConfig fields that describe how to run, not what was trained: a run's config.model sets them even
# when the checkpoint it starts from names the architecture.
RUNTIME_MODEL_FIELDS = ("dtype", "param_dtype", "hidden_dropout", "attention_dropout", "scan_layers", "remat",
                        "attention_impl", "remat_policy")
# Fields that fix the parameter layout: a checkpoint's saved config decides them, but a run starting from a
# Hugging Face directory (which has no such layout) sets them itself.
LAYOUT_MODEL_FIELDS = ("scan_layers", "vocab_pad_multiple")
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
      position_buckets: DeBERTa: log-bucketed relative positions, buckets each side (<= 0: exact offsets).
      max_relative_positions: DeBERTa: the longest relative offset told apart (< 1: max_position_embeddings).
      pos_att_type: DeBERTa: the position terms of the disentangled attention, ``"c2p|p2c"`` or one of them.
      share_att_key: DeBERTa: relative positions project through the content query/key kernels (v2/v3).
      norm_rel_ebd: DeBERTa: ``"layer_norm"`` (a LayerNorm on the relative embeddings, v2/v3) or ``"none"``.
      position_biased_input: DeBERTa: add absolute position embeddings to the input (False in v2/v3).
      enhanced_mask_decoder: DeBERTa: the MLM head reads the Enhanced Mask Decoder (absolute positions).
      attention_window: Longformer: the local window of each layer in tokens (even; a token sees
        ``window / 2`` keys either side), one value for every layer or one per layer (Hugging Face's
        ``attention_window``); other architectures ignore it.
      max_global_tokens: Longformer: the most tokens per row with global attention (a static bound;
        global tokens past it attend locally).
      pad_token_id: the tokenizer's padding id; RoBERTa-style positions (Longformer) start at
        ``pad_token_id + 1``, so ``max_position_embeddings - pad_token_id - 1`` tokens fit.
      vocab_pad_multiple: pad the vocabulary rows (word embeddings, MLM output bias, logits) to a multiple of
        this (1 = off); padding ids' logits are masked, Hugging Face import pads and export slices.
      remat_policy: what each layer saves for the backward pass (``REMAT_POLICIES``); None follows ``remat``.
      rope_theta: rotary base of the global-attention layers (ModernBERT 160,000; unused by BERT).
      local_rope_theta: rotary base of the sliding-window layers (ModernBERT 10,000; unused by BERT).
      local_attention: total sliding-window width of the local layers, ``local_attention // 2`` keys each side (ModernBERT).
      global_attn_every_n_layers: layer ``i`` attends globally when ``i % n == 0``, else locally (ModernBERT).
      norm_bias: whether ModernBERT's LayerNorms have a bias (BERT's always do).
      attention_bias: whether ModernBERT's attention projections have biases (BERT's always do).
      mlp_bias: whether ModernBERT's GeGLU projections have biases (BERT's always do).
      decoder_bias: whether ModernBERT's tied MLM decoder has a bias (BERT's always does).
      classifier_bias: whether ModernBERT's prediction-head dense layer has a bias.
      classifier_act: activation of ModernBERT's prediction head (``ACTIVATIONS``).
      classifier_pooling: ModernBERT's sentence vector before its head: ``"cls"`` (first token) or ``"mean"``.
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
    position_buckets: int = 256
    max_relative_positions: int = -1
    pos_att_type: str = "c2p|p2c"
    share_att_key: bool = True
    norm_rel_ebd: str = "layer_norm"
    position_biased_input: bool = False
    enhanced_mask_decoder: bool = False
    attention_window: tuple[int, ...] = (512,)
    max_global_tokens: int = 128
    pad_token_id: int = 0
    vocab_pad_multiple: int = 1
    remat_policy: str | None = None
    rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_attention: int = 128
    global_attn_every_n_layers: int = 3
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    decoder_bias: bool = True
    classifier_bias: bool = False
    classifier_act: str = "gelu"
    classifier_pooling: str = "cls"

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
        object.__setattr__(self, "attention_window", tuple(int(w) for w in self.attention_window))
        if (self.num_layers and len(self.attention_window) not in (1, self.num_layers)) or any(
                w <= 0 or w % 2 for w in self.attention_window):
            raise ValueError(f"model.attention_window={list(self.attention_window)}: expected one positive even "
                             f"window, or one per layer ({self.num_layers})")
        if self.max_global_tokens < 1:
            raise ValueError(f"model.max_global_tokens={self.max_global_tokens}; expected >= 1")
        if not isinstance(self.vocab_pad_multiple, int) or self.vocab_pad_multiple < 1:
            raise ValueError(f"model.vocab_pad_multiple={self.vocab_pad_multiple!r}; expected an integer >= 1 (1 = off)")
        if self.remat_policy is not None and self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"model.remat_policy={self.remat_policy!r}; expected None or one of {REMAT_POLICIES}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"model.pad_token_id={self.pad_token_id} must be in [0, vocab_size={self.vocab_size})")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                raise ValueError(f"model.{field}={getattr(self, field)!r}; expected one of {sorted(_DTYPES)}")
        attention_types = [t.strip() for t in self.pos_att_type.lower().split("|") if t.strip()]
        if not set(attention_types) <= {"c2p", "p2c"}:
            raise ValueError(f"model.pos_att_type={self.pos_att_type!r}; expected 'c2p|p2c', 'c2p' or 'p2c'")
        if self.norm_rel_ebd not in ("layer_norm", "none"):
            raise ValueError(f"model.norm_rel_ebd={self.norm_rel_ebd!r}; expected 'layer_norm' or 'none'")
        if self.enhanced_mask_decoder and self.position_biased_input:
            raise ValueError("model.enhanced_mask_decoder=True adds absolute positions in the MLM decoder only; "
                             "it needs model.position_biased_input=False")
        if self.classifier_act not in ACTIVATIONS:
            raise ValueError(f"model.classifier_act={self.classifier_act!r}; expected one of {ACTIVATIONS}")
        if self.classifier_pooling not in ("cls", "mean"):
            raise ValueError(f"model.classifier_pooling={self.classifier_pooling!r}; expected 'cls' or 'mean'")
        if self.local_attention < 0 or self.global_attn_every_n_layers < 1:
            raise ValueError(f"model.local_attention={self.local_attention} must be >= 0 and "
                             f"model.global_attn_every_n_layers={self.global_attn_every_n_layers} >= 1")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table and the MLM logits: ``vocab_size`` rounded up to ``vocab_pad_multiple``."""
        return -(-self.vocab_size // self.vocab_pad_multiple) * self.vocab_pad_multiple

    @property
    def effective_remat_policy(self) -> str:
        """``remat_policy``, or ``"full"`` / ``"none"`` from the boolean ``remat`` when it is None."""
        if self.remat_policy is not None:
            return self.remat_policy
        return "full" if self.remat else "none"

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
        """The fields as JSON-like values (``attention_window`` as a list, as a saved config.json reads back)."""
        return {**dataclasses.asdict(self), "attention_window": list(self.attention_window)}

    def non_embedding_params(self) -> int:
        """Parameters in the Transformer layers (weights and biases), excluding embeddings and heads."""
        h, i = self.hidden_size, self.intermediate_size
        attention = 4 * (h * h + h) + 2 * h
        ffn = h * i + i + i * h + h + 2 * h
        return self.num_layers * (attention + ffn)

    def train_flops_per_token(self, seq_len: int, max_predictions: int) -> float:
        """Matmul FLOPs per token for forward + backward (docs/benchmarks.md, "FLOPs and MFU").

        3 x the layer stack's forward FLOPs (``models.layer_stack_flops``; BERT: 6 x non-embedding params
        + 12 x layers x seq x hidden for the attention scores and values; other architectures count their
        own layers: GeGLU, windows, relative-position terms) + the masked-position MLM head (transform and
        vocabulary projection) for ``max_predictions`` per sequence, spread over the sequence's tokens.
        """
        from bert_jax import models  # noqa: PLC0415 - the registry imports this module

        h, v = self.hidden_size, self.vocab_size
        head = (max_predictions / seq_len) * 6 * (h * h + h * v)
        return 3 * models.layer_stack_flops(self, seq_len) + head
