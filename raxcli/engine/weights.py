"""The weights of a Qwen3.5 GGUF, memory-mapped and left in their quantized blocks.

`Matrix` wraps one 2-D tensor W[n_out, n_in] as stored (GGUF rows are output features)
and computes W·x with the kernels of `quant`; nothing is dequantized wholesale. Small
1-D tensors (norms, biases, ssm_a, conv kernels) are read as float32 arrays.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType

from quant import formats, kernels
from quant.activations import Int8Activations
from quant.gemm import Int16Tokens

from .config import ConfigError, TextConfig
from .gguf_file import GGUFFile, GGUFFormatError


class ModelFileError(ValueError):
    """A model file rax cannot use; the message names the file and the reason."""


ACTIVATION_KINDS = ("float", "int8", "fine")


class Activation:
    """An input x [T, n] to one or more matrices, with its int8 form (quant.activations) made
    on first use and shared: the q/k/v/gate projections and the MLP's gate/up each read the
    same normed hidden state, which is then quantized once.

    A decode step keeps one Activation per input and `refill`s it each token, its int8 forms
    re-made into their arrays: no allocation."""

    __slots__ = ("x", "_int8", "_int16", "_values")

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self._int8 = []         # [form, the `_values` it was made from]
        self._int16 = None
        self._values = 0        # counts refills

    def refill(self, x: np.ndarray | None = None) -> "Activation":
        """New values: x itself (kept by reference, not copied), or with no x the values
        written into self.x in place. Int8 forms made before are re-made into their own
        arrays when next asked for (another shape drops them)."""
        if x is not None:
            x = np.ascontiguousarray(x, dtype=np.float32)
            if x.shape != self.x.shape:
                self._int8 = []
            self.x = x
        self._int16 = None
        self._values += 1
        return self

    def int16(self) -> Int16Tokens:
        """The grouped int16 form for many tokens (prefill; quant/gemm.py)."""
        if self._int16 is None:
            self._int16 = Int16Tokens.quantize(self.x)
        return self._int16

    def int8(self, fine: bool, block: int) -> Int8Activations:
        """The int8 form with one scale per `block` values (32, or 256 for the k-quants)."""
        for entry in self._int8:
            acts = entry[0]
            if acts.fine == fine and acts.block == block:
                if entry[1] != self._values:
                    acts.requantize(self.x)
                    entry[1] = self._values
                return acts
        acts = Int8Activations.quantize(self.x, fine=fine, block=block)
        self._int8.append([acts, self._values])
        return acts


class Matrix:
    """W[n_out, n_in] in its stored ggml type; `W(x)` is x @ Wᵀ for x of shape [n_in] or
    [T, n_in] (or an `Activation` of shape [T, n_in]).

    `activations` says how x meets the quantized blocks (`ModelWeights.set_activations`):
    "float" keeps it float32 (exact: the dequantized weights times x); "int8" quantizes it to
    int8 per 32 values as llama.cpp does; "fine" adds a residual int8 code (~15 bits). The int8
    kinds serve up to INT8_TOKENS tokens (decode, drafted tokens); longer inputs (prefill) go
    through int16 activations (14 bits, quant/gemm.py) in both, dequantized tiles and BLAS
    in float32 mode.
    """

    __slots__ = ("name", "raw", "ggml_type", "n_out", "n_in", "weight", "activations", "_one_token")
    INT8_TOKENS = 16

    def __init__(self, name: str, raw: np.ndarray, ggml_type: GGMLQuantizationType, n_out: int, n_in: int):
        self.name, self.raw, self.ggml_type, self.n_out, self.n_in = name, raw, ggml_type, n_out, n_in
        self.weight = kernels.BoundWeight(raw, ggml_type, n_in)
        self.activations = "float"
        self._one_token: Activation | None = None     # a one-token input's forms, re-made each call

    def __call__(self, x, out: np.ndarray | None = None) -> np.ndarray:
        if isinstance(x, Activation):
            act, flat = x, False
        else:
            x = np.asarray(x)
            flat = x.ndim == 1
            x = x.reshape(1, -1) if flat else x
            if x.shape[0] != 1:
                act = Activation(x)
            elif self._one_token is None:
                act = self._one_token = Activation(x)
            else:
                act = self._one_token.refill(x)
        T = act.x.shape[0]
        if act.x.shape[1] != self.n_in:
            raise ValueError(f"{self.name}: input has {act.x.shape[1]} features, the matrix takes {self.n_in}")
        if out is None:
            out = np.empty((T, self.n_out), np.float32)
        if self.int8_mode(T):
            acts = act.int8(self.activations == "fine", self.weight.activation_block)
            self.weight.matmul_int8(acts, act.x, out.reshape(T, self.n_out))
        elif self.activations != "float" and T > self.INT8_TOKENS and self.weight.has_int16:
            self.weight.matmul_int16(act.int16(), act.x, out)
        elif T == 1:
            self.weight.matvec(act.x[0], out.reshape(self.n_out))
        else:
            self.weight.matmul(act.x, out)
        return out.reshape(self.n_out) if flat else out

    def int8_mode(self, n_tokens: int) -> bool:
        """Whether this many tokens go through the int8 kernel (decoding, drafted tokens)."""
        return self.activations != "float" and n_tokens <= self.INT8_TOKENS and self.weight.has_int8

    def rows(self, ids) -> np.ndarray:
        """Dequantized rows (embedding lookup)."""
        return kernels.dequantize_rows(self.raw, self.ggml_type, self.n_in, np.asarray(ids, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.raw.nbytes


class Projections:
    """Matrices that read the same input — DeltaNet's qkv, z, β and α, attention's q, k and v,
    the MLP's gate and up — as one: `projections(x)` returns each one's output.

    A few tokens with int8 activations (decoding) take one pass of the kernel for all the
    matrices that can share one (`kernels.BoundGroup`: one type, width and file); a single
    token's outputs go into a buffer kept for the next call, so the views returned are good
    until this object is called again. Longer inputs (prefill) take each matrix's own path."""

    def __init__(self, *matrices: "Matrix"):
        self.matrices = matrices
        self._plans: dict[tuple, list] = {}        # activation kinds → [(group, kind, indices)]
        self._buffers: dict[int, np.ndarray] = {}    # group → its one-token output

    def __call__(self, x: "Activation") -> list[np.ndarray]:
        T = x.x.shape[0]
        if not all(m.int8_mode(T) for m in self.matrices):
            return [m(x) for m in self.matrices]
        outputs = [None] * len(self.matrices)
        for g, (group, kind, indices) in enumerate(self._plan()):
            out = self._buffers.get(g) if T == 1 else None         # kept for decoding only
            if out is None:
                out = np.empty((T, group.n_rows), np.float32)
                if T == 1:
                    self._buffers[g] = out
            group.matmul_int8(x.int8(kind == "fine", group.activation_block), out)
            column = 0
            for i in indices:
                n = self.matrices[i].n_out
                # one token: a contiguous row; a few: a copy (kernels take contiguous inputs)
                outputs[i] = out[:, column:column + n] if T == 1 else np.ascontiguousarray(out[:, column:column + n])
                column += n
        return outputs

    def _plan(self) -> list:
        """The matrices sorted into groups that share a pass, in order; made once per setting."""
        key = tuple(m.activations for m in self.matrices)
        plan = self._plans.get(key)
        if plan is None:
            plan = []
            for i, m in enumerate(self.matrices):
                for group_indices in plan:
                    first = self.matrices[group_indices[0]]
                    if first.activations == m.activations and first.weight.shares_pass_with(m.weight):
                        group_indices.append(i)
                        break
                else:
                    plan.append([i])
            plan = self._plans[key] = [
                (kernels.BoundGroup([self.matrices[i].weight for i in ids]), self.matrices[ids[0]].activations, ids)
                for ids in plan]
        return plan


@dataclass
class LayerWeights:
    """The tensors of one decoder block; the token-mixer fields are None where unused."""
    attn_norm: np.ndarray
    post_attention_norm: np.ndarray
    ffn_gate: Matrix
    ffn_up: Matrix
    ffn_down: Matrix
    # gated full attention
    attn_q: Matrix | None = None
    attn_k: Matrix | None = None
    attn_v: Matrix | None = None
    attn_output: Matrix | None = None
    attn_q_norm: np.ndarray | None = None
    attn_k_norm: np.ndarray | None = None
    # gated DeltaNet
    attn_qkv: Matrix | None = None
    attn_gate: Matrix | None = None
    ssm_beta: Matrix | None = None
    ssm_alpha: Matrix | None = None
    ssm_out: Matrix | None = None
    ssm_conv1d: np.ndarray | None = None    # [conv_dim, kernel]
    ssm_a: np.ndarray | None = None         # −exp(A_log), per v-head
    ssm_dt_bias: np.ndarray | None = None
    ssm_norm: np.ndarray | None = None


@dataclass
class MTPWeights:
    """The multi-token-prediction block llama.cpp appends after the trunk (`blk.{n_layer}`):
    a gated-attention decoder block fed by `eh_proj` over [norm(embedding) | norm(hidden)]."""
    block: LayerWeights
    eh_proj: Matrix                 # [n_embd, 2 * n_embd]
    enorm: np.ndarray
    hnorm: np.ndarray
    head_norm: np.ndarray           # nextn.shared_head_norm, else the model's output_norm
    embed: Matrix                   # nextn.embed_tokens, else token_embd
    head: Matrix                    # nextn.shared_head_head, else the output matrix


def open_gguf(path: Path, kind: str = "a GGUF") -> GGUFFile:
    """Map a GGUF file, or say in one line why it cannot be (ModelFileError names the file)."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not {kind} file")
    try:
        return GGUFFile(path)
    except GGUFFormatError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


class CheckedTensors:
    """Tensor access that names the file and the tensor when one is missing or misshapen
    (shared by the text model and the mmproj)."""
    path: Path
    file: GGUFFile

    def _info(self, name: str):
        info = self.file.tensors.get(name)
        if info is None:
            raise ModelFileError(f"{self.path}: tensor {name} is missing")
        return info

    def matrix(self, name: str, n_out: int, n_in: int) -> Matrix:
        info = self._info(name)
        if info.shape != (n_out, n_in):
            raise ModelFileError(f"{self.path}: tensor {name} has shape {info.shape}, expected {(n_out, n_in)}")
        return Matrix(name, self.file.raw(name), info.ggml_type, n_out, n_in)


class ModelWeights(CheckedTensors):
    """Opens and validates a GGUF: architecture, tensor types, presence and shapes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = open_gguf(self.path)
        md = self.file.metadata
        tokens = md.get("tokenizer.ggml.tokens")
        n_vocab = None
        if "token_embd.weight" in self.file.tensors:
            n_vocab = self.file.tensors["token_embd.weight"].shape[0]
        try:
            self.config = TextConfig.from_metadata(md, n_vocab=n_vocab or len(tokens or ()))
        except ConfigError as exc:
            raise ModelFileError(f"{self.path}: {exc}") from None
        for info in self.file.tensors.values():
            if not formats.is_supported(info.ggml_type):
                raise ModelFileError(
                    f"{self.path}: tensor {info.name} has type {info.ggml_type.name}, which rax does not support")

        c = self.config
        self.token_embd = self.matrix("token_embd.weight", c.n_vocab, c.n_embd)
        self.output = (self.matrix("output.weight", c.n_vocab, c.n_embd)
                       if "output.weight" in self.file.tensors else self.token_embd)   # tied embeddings
        self.output_norm = self.vector("output_norm.weight", c.n_embd)
        self.layers = [self._layer(i) for i in range(c.n_layer)]
        self.mtp = self._mtp() if c.n_nextn else None

    def vector(self, name: str, *shape: int) -> np.ndarray:
        info = self._info(name)
        if info.shape != tuple(shape):
            raise ModelFileError(f"{self.path}: tensor {name} has shape {info.shape}, expected {shape}")
        raw = self.file.raw(name)
        values = kernels.dequantize(raw.reshape(-1, raw.shape[-1]), info.ggml_type, shape[-1])
        return np.ascontiguousarray(values.reshape(shape), dtype=np.float32)

    def _layer(self, i: int, recurrent: bool | None = None) -> LayerWeights:
        c, p = self.config, f"blk.{i}."
        recurrent = c.is_recurrent[i] if recurrent is None else recurrent
        fields = dict(
            attn_norm=self.vector(p + "attn_norm.weight", c.n_embd),
            post_attention_norm=self.vector(p + "post_attention_norm.weight", c.n_embd),
            ffn_gate=self.matrix(p + "ffn_gate.weight", c.n_ff, c.n_embd),
            ffn_up=self.matrix(p + "ffn_up.weight", c.n_ff, c.n_embd),
            ffn_down=self.matrix(p + "ffn_down.weight", c.n_embd, c.n_ff),
        )
        if recurrent:
            d, n_v, conv_dim = c.ssm_state_size, c.ssm_n_v_heads, c.ssm_conv_dim
            fields.update(
                attn_qkv=self.matrix(p + "attn_qkv.weight", conv_dim, c.n_embd),
                attn_gate=self.matrix(p + "attn_gate.weight", c.ssm_inner_size, c.n_embd),
                ssm_beta=self.matrix(p + "ssm_beta.weight", n_v, c.n_embd),
                ssm_alpha=self.matrix(p + "ssm_alpha.weight", n_v, c.n_embd),
                ssm_out=self.matrix(p + "ssm_out.weight", c.n_embd, c.ssm_inner_size),
                ssm_conv1d=self.vector(p + "ssm_conv1d.weight", conv_dim, c.ssm_conv_kernel),
                ssm_a=self.vector(p + "ssm_a", n_v),
                ssm_dt_bias=self.vector(p + "ssm_dt.bias", n_v),
                ssm_norm=self.vector(p + "ssm_norm.weight", d),
            )
        else:
            hd = c.head_dim
            fields.update(
                attn_q=self.matrix(p + "attn_q.weight", 2 * c.n_head * hd, c.n_embd),
                attn_k=self.matrix(p + "attn_k.weight", c.n_head_kv * hd, c.n_embd),
                attn_v=self.matrix(p + "attn_v.weight", c.n_head_kv * hd, c.n_embd),
                attn_output=self.matrix(p + "attn_output.weight", c.n_embd, c.n_head * hd),
                attn_q_norm=self.vector(p + "attn_q_norm.weight", hd),
                attn_k_norm=self.vector(p + "attn_k_norm.weight", hd),
            )
        return LayerWeights(**fields)

    def _mtp(self) -> MTPWeights:
        """Only the first MTP block is used (llama.cpp supports one, as Qwen3.5 ships one)."""
        c, i = self.config, self.config.n_layer
        p = f"blk.{i}.nextn."
        has = self.file.tensors.__contains__
        return MTPWeights(
            block=self._layer(i, recurrent=False),
            eh_proj=self.matrix(p + "eh_proj.weight", c.n_embd, 2 * c.n_embd),
            enorm=self.vector(p + "enorm.weight", c.n_embd),
            hnorm=self.vector(p + "hnorm.weight", c.n_embd),
            head_norm=(self.vector(p + "shared_head_norm.weight", c.n_embd)
                       if has(p + "shared_head_norm.weight") else self.output_norm),
            embed=(self.matrix(p + "embed_tokens.weight", c.n_vocab, c.n_embd)
                   if has(p + "embed_tokens.weight") else self.token_embd),
            head=(self.matrix(p + "shared_head_head.weight", c.n_vocab, c.n_embd)
                  if has(p + "shared_head_head.weight") else self.output),
        )

    def matrices(self):
        """Every Matrix of the model (trunk, output, MTP block), each once."""
        seen = set()
        candidates = [self.token_embd, self.output]
        for layer in self.layers + ([self.mtp.block] if self.mtp else []):
            candidates += [v for v in vars(layer).values() if isinstance(v, Matrix)]
        if self.mtp:
            candidates += [self.mtp.eh_proj, self.mtp.embed, self.mtp.head]
        for m in candidates:
            if id(m) not in seen:
                seen.add(id(m))
                yield m

    def set_activations(self, kind: str) -> None:
        """How every matrix treats its input during decode: "float" (exact float32), "int8"
        (per 32 values, as llama.cpp) or "fine" (int8 plus a residual int8: ~15 bits)."""
        if kind not in ACTIVATION_KINDS:
            raise ValueError(f"activations must be one of {ACTIVATION_KINDS}, not {kind!r}")
        for m in self.matrices():
            m.activations = kind

    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.file.tensors.values())
