"""Hyperparameters of a Qwen3.5 text model, read from GGUF metadata (`qwen35.*`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUPPORTED_ARCHITECTURES = ("qwen35",)


class ConfigError(ValueError):
    """The file's metadata does not describe a model rax can run."""


@dataclass(frozen=True)
class TextConfig:
    n_layer_all: int            # block_count: trunk + multi-token-prediction (nextn) layers
    n_embd: int
    n_ff: int
    n_vocab: int
    context_length: int
    rms_eps: float
    # gated full attention
    n_head: int
    n_head_kv: int
    head_dim: int               # key_length == value_length
    n_rot: int                  # rotary dims per head (partial rotary)
    rope_theta: float
    rope_sections: tuple[int, ...]
    # gated DeltaNet (llama.cpp's ssm.* naming)
    ssm_conv_kernel: int
    ssm_state_size: int         # head dim of k and v
    ssm_n_k_heads: int          # ssm.group_count
    ssm_n_v_heads: int          # ssm.time_step_rank
    ssm_inner_size: int         # n_v_heads * head dim
    is_recurrent: tuple[bool, ...]
    n_nextn: int = 0            # MTP layers appended after the trunk
    arch: str = "qwen35"
    extras: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_layer(self) -> int:
        """Layers of the main pass (the trunk): MTP layers are not run there."""
        return self.n_layer_all - self.n_nextn

    @property
    def ssm_conv_dim(self) -> int:
        return 2 * self.ssm_n_k_heads * self.ssm_state_size + self.ssm_inner_size

    @classmethod
    def from_metadata(cls, md: dict[str, Any], n_vocab: int) -> "TextConfig":
        arch = md.get("general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"architecture {arch!r} is not supported (rax runs {', '.join(SUPPORTED_ARCHITECTURES)})")

        def get(key: str, default: Any = KeyError) -> Any:
            full = f"{arch}.{key}"
            if full in md:
                return md[full]
            if default is KeyError:
                raise ConfigError(f"metadata key {full!r} is missing")
            return default

        n_layer_all = int(get("block_count"))
        n_nextn = int(get("nextn_predict_layers", 0))
        n_layer = n_layer_all - n_nextn
        n_head = int(get("attention.head_count"))
        head_dim = int(get("attention.key_length", int(get("embedding_length")) // n_head))
        if int(get("attention.value_length", head_dim)) != head_dim:
            raise ConfigError("attention key and value lengths differ")

        recurrent = get("attention.recurrent_layers", None)
        if recurrent is None:
            interval = int(get("full_attention_interval", 4))
            recurrent = [i < n_layer and (i + 1) % interval != 0 for i in range(n_layer_all)]
        recurrent = tuple(bool(r) for r in recurrent)
        if len(recurrent) != n_layer_all:
            raise ConfigError("recurrent layer flags do not match block_count")

        sections = tuple(int(s) for s in get("rope.dimension_sections", [11, 11, 10, 0]))
        n_k = int(get("ssm.group_count"))
        n_v = int(get("ssm.time_step_rank"))
        if n_v % n_k:
            raise ConfigError(f"DeltaNet v-heads ({n_v}) must be a multiple of k-heads ({n_k})")
        return cls(
            n_layer_all=n_layer_all,
            n_embd=int(get("embedding_length")),
            n_ff=int(get("feed_forward_length")),
            n_vocab=n_vocab,
            context_length=int(get("context_length", 262144)),
            rms_eps=float(get("attention.layer_norm_rms_epsilon")),
            n_head=n_head,
            n_head_kv=int(get("attention.head_count_kv")),
            head_dim=head_dim,
            n_rot=int(get("rope.dimension_count", head_dim // 4)),
            rope_theta=float(get("rope.freq_base", 1e7)),
            rope_sections=sections,
            ssm_conv_kernel=int(get("ssm.conv_kernel")),
            ssm_state_size=int(get("ssm.state_size")),
            ssm_n_k_heads=n_k,
            ssm_n_v_heads=n_v,
            ssm_inner_size=int(get("ssm.inner_size")),
            is_recurrent=recurrent,
            n_nextn=n_nextn,
            arch=arch,
        )
