"""GGUF (ds4 / dsv4 layout, ARCH.md §11) -> official DeepSeek V4 state dict + ModelArgs,
and -> HF transformers DeepseekV4 state dict + config kwargs.

Reads and dequantizes with llama.cpp's pure-numpy gguf-py (F32, F16, BF16, Q8_0, Q2_K, Q4_K,
IQ2_XXS, I32, ...). gguf-py is located, in order, from: the `gguf_py` argument / `--gguf-py DIR`,
env DSV4_GGUF_PY, <repo>/.ref/gguf-py, <repo>/tests/oracles/.cache/gguf-py.

Stand-alone use (prints metadata, tensor list and the mapping check):
    python3 tools/ref/load_gguf.py --model M.gguf [--mtp M-mtp.gguf] [--gguf-py DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
_GGUF = None  # the imported gguf module


class MappingError(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# gguf-py
# ----------------------------------------------------------------------------------------------
def setup_gguf_py(gguf_py: Optional[str] = None):
    """Import llama.cpp's gguf-py from an explicit dir, $DSV4_GGUF_PY, .ref/gguf-py or the oracle cache."""
    global _GGUF
    if _GGUF is not None:
        return _GGUF
    cands: List[Path] = []
    if gguf_py:
        cands.append(Path(gguf_py))
    if os.environ.get("DSV4_GGUF_PY"):
        cands.append(Path(os.environ["DSV4_GGUF_PY"]))
    cands += [REPO_ROOT / ".ref" / "gguf-py", REPO_ROOT / "tests" / "oracles" / ".cache" / "gguf-py"]
    for c in cands:
        if (c / "gguf" / "quants.py").is_file():
            if str(c) not in sys.path:
                sys.path.insert(0, str(c))
            break
    else:
        raise ImportError("gguf-py not found; tried: " + ", ".join(str(c) for c in cands) +
                          " (pass --gguf-py DIR or set DSV4_GGUF_PY; scripts/fetch_oracles.sh extracts it)")
    try:  # gguf/metadata.py imports yaml, which only matters for writing metadata; stub it if absent
        import yaml  # noqa: F401
    except ImportError:
        sys.modules["yaml"] = types.ModuleType("yaml")
    import gguf  # type: ignore
    import gguf.quants  # type: ignore  # noqa: F401
    _GGUF = gguf
    return gguf


def gguf_py_info() -> Dict[str, str]:
    gguf = _GGUF
    if gguf is None:
        return {}
    root = Path(gguf.__file__).resolve().parents[1]
    commit = (root / "LLAMA_CPP_COMMIT").read_text().strip() if (root / "LLAMA_CPP_COMMIT").is_file() else "unknown"
    return {"path": str(root), "llama_cpp_commit": commit}


def file_md5(path: str, chunk: int = 1 << 24) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------
class GGUFFile:
    """Metadata (python values) + lazily dequantized tensors of one GGUF file."""

    def __init__(self, path: str, gguf_py: Optional[str] = None):
        gguf = setup_gguf_py(gguf_py)
        self.path = str(path)
        self.reader = gguf.GGUFReader(self.path, "r")
        self.meta: Dict[str, Any] = {}
        for name, field in self.reader.fields.items():
            if name.startswith("GGUF."):
                continue
            try:
                self.meta[name] = self._field_value(field)
            except Exception as e:  # pragma: no cover - exotic field types
                self.meta[name] = f"<unreadable: {e}>"
        self.tensors = {t.name: t for t in self.reader.tensors}

    @staticmethod
    def _field_value(field):
        gguf = _GGUF
        vt = gguf.GGUFValueType
        if not field.types:
            return None
        main = field.types[0]
        if main == vt.ARRAY:
            sub = field.types[-1]
            if sub == vt.STRING:
                return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
            return [field.parts[i].tolist()[0] if len(field.parts[i]) == 1 else field.parts[i].tolist()
                    for i in field.data]
        if main == vt.STRING:
            return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
        v = field.parts[field.data[0]].tolist()
        v = v[0] if isinstance(v, list) and len(v) == 1 else v
        if main == vt.BOOL:
            return bool(v)
        return v

    def arch(self) -> str:
        return str(self.meta.get("general.architecture", "deepseek4"))

    def has(self, name: str) -> bool:
        return name in self.tensors

    def ne(self, name: str) -> List[int]:
        return [int(x) for x in self.tensors[name].shape]

    def type_name(self, name: str) -> str:
        return self.tensors[name].tensor_type.name

    def array(self, name: str) -> np.ndarray:
        """Dequantized tensor in numpy (row-major, shape = reversed GGUF ne): float32, or int32 for I32."""
        gguf = _GGUF
        t = self.tensors[name]
        qt = gguf.GGMLQuantizationType
        shape = tuple(reversed([int(x) for x in t.shape]))
        if t.tensor_type in (qt.I32, qt.I16, qt.I8, qt.I64):
            return np.array(t.data, copy=True).reshape(shape)
        if t.tensor_type == qt.F32:
            out = np.array(t.data, dtype=np.float32, copy=True)
        elif t.tensor_type == qt.F16:
            out = np.asarray(t.data).view(np.float16).astype(np.float32)
        else:
            out = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32, copy=False)
        return np.ascontiguousarray(out.reshape(shape))


# ----------------------------------------------------------------------------------------------
# hyperparameters
# ----------------------------------------------------------------------------------------------
def _req(meta: Dict[str, Any], key: str):
    if key not in meta:
        raise MappingError(f"GGUF metadata key missing: {key}")
    return meta[key]


def hparams(main: GGUFFile) -> Dict[str, Any]:
    """All dimensions from the deepseek4.* keys of ARCH.md §11.2 (names follow the official ModelArgs)."""
    m = main.meta
    a = main.arch()
    k = lambda s: f"{a}.{s}"  # noqa: E731
    n_layers = int(_req(m, k("block_count")))
    ratios = [int(x) for x in _req(m, k("attention.compress_ratios"))]
    if len(ratios) < n_layers:
        raise MappingError(f"{k('attention.compress_ratios')} has {len(ratios)} entries < block_count {n_layers}")
    clamp = _req(m, k("swiglu_clamp_exp"))
    clamp = [float(x) for x in (clamp if isinstance(clamp, list) else [clamp])]
    if len(set(clamp[:n_layers])) != 1:
        raise MappingError(f"swiglu_clamp_exp differs per layer ({clamp}); the official code has one swiglu_limit")
    vocab = int(m.get(k("vocab_size"), main.ne("token_embd.weight")[1]))
    hp = dict(
        n_layers=n_layers,
        compress_ratios=ratios,
        vocab_size=vocab,
        dim=int(_req(m, k("embedding_length"))),
        n_heads=int(_req(m, k("attention.head_count"))),
        n_kv_heads=int(m.get(k("attention.head_count_kv"), 1)),
        head_dim=int(_req(m, k("attention.key_length"))),
        value_dim=int(m.get(k("attention.value_length"), _req(m, k("attention.key_length")))),
        rope_head_dim=int(_req(m, k("rope.dimension_count"))),
        q_lora_rank=int(_req(m, k("attention.q_lora_rank"))),
        o_lora_rank=int(_req(m, k("attention.output_lora_rank"))),
        o_groups=int(_req(m, k("attention.output_group_count"))),
        n_routed_experts=int(_req(m, k("expert_count"))),
        n_activated_experts=int(_req(m, k("expert_used_count"))),
        moe_inter_dim=int(_req(m, k("expert_feed_forward_length"))),
        n_shared_experts=int(m.get(k("expert_shared_count"), 1)),
        n_hash_layers=int(_req(m, k("hash_layer_count"))),
        window_size=int(_req(m, k("attention.sliding_window"))),
        index_n_heads=int(_req(m, k("attention.indexer.head_count"))),
        index_head_dim=int(_req(m, k("attention.indexer.key_length"))),
        index_topk=int(_req(m, k("attention.indexer.top_k"))),
        hc_mult=int(_req(m, k("hyper_connection.count"))),
        hc_sinkhorn_iters=int(_req(m, k("hyper_connection.sinkhorn_iterations"))),
        hc_eps=float(_req(m, k("hyper_connection.epsilon"))),
        swiglu_limit=clamp[0],
        original_seq_len=int(_req(m, k("rope.scaling.original_context_length"))),
        rope_theta=float(_req(m, k("rope.freq_base"))),
        rope_factor=float(_req(m, k("rope.scaling.factor"))),
        beta_fast=float(_req(m, k("rope.scaling.yarn_beta_fast"))),
        beta_slow=float(_req(m, k("rope.scaling.yarn_beta_slow"))),
        compress_rope_theta=float(_req(m, k("attention.compress_rope_freq_base"))),
        route_scale=float(_req(m, k("expert_weights_scale"))),
        norm_eps=float(_req(m, k("attention.layer_norm_rms_epsilon"))),
        expert_weights_norm=bool(m.get(k("expert_weights_norm"), True)),
        expert_group_count=int(m.get(k("expert_group_count"), 0)),
    )
    if hp["n_kv_heads"] != 1:
        raise MappingError(f"head_count_kv must be 1 (got {hp['n_kv_heads']})")
    if hp["n_shared_experts"] != 1:
        raise MappingError(f"expert_shared_count must be 1 for the official code (got {hp['n_shared_experts']})")
    if not hp["expert_weights_norm"]:
        raise MappingError("expert_weights_norm=false is not supported by the official code (sqrtsoftplus renormalises)")
    if hp["expert_group_count"] not in (0, 1):
        raise MappingError("grouped expert routing is not part of DeepSeek V4")
    for r in ratios:
        if r not in (0, 4, 128):
            raise MappingError(f"compress ratio {r} not in {{0,4,128}}")
    return hp


def official_model_args(hp: Dict[str, Any], max_seq_len: int, with_mtp: bool) -> Dict[str, Any]:
    """Keyword arguments for the official ModelArgs (fp32 reference run: dtype bf16 then .float())."""
    ratios = list(hp["compress_ratios"])
    n_mtp = 1 if with_mtp else 0
    need = hp["n_layers"] + n_mtp
    if len(ratios) < need:
        ratios = ratios + [0] * (need - len(ratios))
    ratios = ratios[:need]
    if with_mtp and ratios[hp["n_layers"]] != 0:
        raise MappingError(f"compress ratio of the MTP block (index {hp['n_layers']}) must be 0, got {ratios[hp['n_layers']]}")
    keys = ["vocab_size", "dim", "moe_inter_dim", "n_layers", "n_hash_layers", "n_heads", "n_routed_experts",
            "n_shared_experts", "n_activated_experts", "route_scale", "swiglu_limit", "q_lora_rank", "head_dim",
            "rope_head_dim", "norm_eps", "o_groups", "o_lora_rank", "window_size", "compress_rope_theta",
            "original_seq_len", "rope_theta", "rope_factor", "index_n_heads", "index_head_dim", "index_topk",
            "hc_mult", "hc_sinkhorn_iters", "hc_eps"]
    args = {k: hp[k] for k in keys}
    args["beta_fast"] = int(hp["beta_fast"]) if float(hp["beta_fast"]).is_integer() else hp["beta_fast"]
    args["beta_slow"] = int(hp["beta_slow"]) if float(hp["beta_slow"]).is_integer() else hp["beta_slow"]
    args.update(
        max_batch_size=1,
        max_seq_len=int(max_seq_len),
        dtype="bf16",
        scale_fmt="ue8m0",
        scale_dtype="fp32",
        expert_dtype=None,
        score_func="sqrtsoftplus",
        n_mtp_layers=n_mtp,
        compress_ratios=tuple(ratios),
    )
    return args


# ----------------------------------------------------------------------------------------------
# GGUF -> official names
# ----------------------------------------------------------------------------------------------
TOP_MAP = {
    "token_embd.weight": "embed.weight",
    "output.weight": "head.weight",
    "output_norm.weight": "norm.weight",
    "output_hc_fn.weight": "hc_head_fn",
    "output_hc_base.weight": "hc_head_base",
    "output_hc_scale.weight": "hc_head_scale",
}
# per-block tensors (GGUF suffix after "blk.N." / "mtp.0." -> official suffix after "layers.N." / "mtp.0.")
LAYER_MAP = {
    "hc_attn_fn.weight": "hc_attn_fn",
    "hc_attn_base.weight": "hc_attn_base",
    "hc_attn_scale.weight": "hc_attn_scale",
    "hc_ffn_fn.weight": "hc_ffn_fn",
    "hc_ffn_base.weight": "hc_ffn_base",
    "hc_ffn_scale.weight": "hc_ffn_scale",
    "attn_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "attn_q_a.weight": "attn.wq_a.weight",
    "attn_q_a_norm.weight": "attn.q_norm.weight",
    "attn_q_b.weight": "attn.wq_b.weight",
    "attn_kv.weight": "attn.wkv.weight",
    "attn_kv_a_norm.weight": "attn.kv_norm.weight",
    "attn_sinks.weight": "attn.attn_sink",
    "attn_output_a.weight": "attn.wo_a.weight",
    "attn_output_b.weight": "attn.wo_b.weight",
    "attn_compressor_ape.weight": "attn.compressor.ape",
    "attn_compressor_kv.weight": "attn.compressor.wkv.weight",
    "attn_compressor_gate.weight": "attn.compressor.wgate.weight",
    "attn_compressor_norm.weight": "attn.compressor.norm.weight",
    "indexer.attn_q_b.weight": "attn.indexer.wq_b.weight",
    "indexer.proj.weight": "attn.indexer.weights_proj.weight",
    "indexer_compressor_ape.weight": "attn.indexer.compressor.ape",
    "indexer_compressor_kv.weight": "attn.indexer.compressor.wkv.weight",
    "indexer_compressor_gate.weight": "attn.indexer.compressor.wgate.weight",
    "indexer_compressor_norm.weight": "attn.indexer.compressor.norm.weight",
    "ffn_gate_inp.weight": "ffn.gate.weight",
    "exp_probs_b.bias": "ffn.gate.bias",
    "ffn_gate_tid2eid.weight": "ffn.gate.tid2eid",
    "ffn_gate_shexp.weight": "ffn.shared_experts.w1.weight",
    "ffn_up_shexp.weight": "ffn.shared_experts.w3.weight",
    "ffn_down_shexp.weight": "ffn.shared_experts.w2.weight",
}
EXPERT_MAP = {"ffn_gate_exps.weight": "w1", "ffn_up_exps.weight": "w3", "ffn_down_exps.weight": "w2"}
MTP_TOP_MAP = {
    "hc_head_fn.weight": "hc_head_fn",
    "hc_head_base.weight": "hc_head_base",
    "hc_head_scale.weight": "hc_head_scale",
    "e_proj.weight": "e_proj.weight",
    "h_proj.weight": "h_proj.weight",
    "enorm.weight": "enorm.weight",
    "hnorm.weight": "hnorm.weight",
    "norm.weight": "norm.weight",
}


def _map_block(src: GGUFFile, gprefix: str, oprefix: str, out: Dict[str, np.ndarray], used: set,
               n_experts: int) -> None:
    for gsuf, osuf in LAYER_MAP.items():
        name = gprefix + gsuf
        if src.has(name):
            a = src.array(name)
            if gsuf == "ffn_gate_tid2eid.weight":
                a = a.astype(np.int32)
            out[oprefix + osuf] = a
            used.add(name)
    for gsuf, w in EXPERT_MAP.items():
        name = gprefix + gsuf
        if src.has(name):
            a = src.array(name)  # [E, out, in]
            if a.shape[0] != n_experts:
                raise MappingError(f"{name}: {a.shape[0]} experts, metadata says {n_experts}")
            for e in range(a.shape[0]):
                out[f"{oprefix}ffn.experts.{e}.{w}.weight"] = np.ascontiguousarray(a[e])
            used.add(name)


def official_state_dict(main: GGUFFile, mtp: Optional[GGUFFile], hp: Dict[str, Any]) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Returns (state dict of numpy arrays with official names, list of GGUF tensors that were not mapped)."""
    out: Dict[str, np.ndarray] = {}
    used: set = set()
    for g, o in TOP_MAP.items():
        if main.has(g):
            out[o] = main.array(g)
            used.add(g)
    for L in range(hp["n_layers"]):
        _map_block(main, f"blk.{L}.", f"layers.{L}.", out, used, hp["n_routed_experts"])
    unmapped = [f"{main.path}: {n}" for n in main.tensors if n not in used]
    if mtp is not None:
        used_m: set = set()
        for g, o in MTP_TOP_MAP.items():
            if mtp.has("mtp.0." + g):
                out["mtp.0." + o] = mtp.array("mtp.0." + g)
                used_m.add("mtp.0." + g)
        _map_block(mtp, "mtp.0.", "mtp.0.", out, used_m, hp["n_routed_experts"])
        unmapped += [f"{mtp.path}: {n}" for n in mtp.tensors if n not in used_m]
    return out, unmapped


def load_into_official(model, sd_np: Dict[str, np.ndarray], unmapped: List[str]) -> None:
    """Copy into an official Transformer with strict key/shape checks; raises MappingError listing problems."""
    import torch
    expected = model.state_dict()
    sd = {}
    for k, v in sd_np.items():
        sd[k] = torch.from_numpy(np.ascontiguousarray(v))
    # MTPBlock holds references to the shared embedding and head modules -> their keys appear twice
    for k in expected:
        if k not in sd and k.startswith("mtp.") and (k.endswith(".embed.weight") or k.endswith(".head.weight")):
            base = "embed.weight" if k.endswith(".embed.weight") else "head.weight"
            if base in sd:
                sd[k] = sd[base]
    problems = []
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing:
        problems.append("official parameters with no GGUF tensor:\n    " + "\n    ".join(missing))
    if extra:
        problems.append("mapped GGUF tensors with no official parameter:\n    " + "\n    ".join(extra))
    if unmapped:
        problems.append("GGUF tensors not mapped to anything:\n    " + "\n    ".join(unmapped))
    for k in expected:
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape):
            problems.append(f"shape mismatch {k}: GGUF {tuple(sd[k].shape)} vs official {tuple(expected[k].shape)}")
    if problems:
        raise MappingError("GGUF -> official mapping failed:\n  " + "\n  ".join(problems))
    for k in expected:
        sd[k] = sd[k].to(dtype=expected[k].dtype)
    res = model.load_state_dict(sd, strict=True)
    if getattr(res, "missing_keys", None) or getattr(res, "unexpected_keys", None):
        raise MappingError(f"load_state_dict reported missing={res.missing_keys} unexpected={res.unexpected_keys}")


# ----------------------------------------------------------------------------------------------
# HF transformers DeepseekV4 (5.17) mapping
# ----------------------------------------------------------------------------------------------
def hf_config_kwargs(hp: Dict[str, Any]) -> Dict[str, Any]:
    """DeepseekV4Config kwargs (modern field names of transformers 5.17; see run_hf.build_hf_config for fallbacks)."""
    rt = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}
    n = hp["n_layers"]
    return dict(
        vocab_size=hp["vocab_size"],
        hidden_size=hp["dim"],
        moe_intermediate_size=hp["moe_inter_dim"],
        num_hidden_layers=n,
        num_attention_heads=hp["n_heads"],
        num_key_value_heads=1,
        head_dim=hp["head_dim"],
        q_lora_rank=hp["q_lora_rank"],
        num_experts_per_tok=hp["n_activated_experts"],
        n_routed_experts=hp["n_routed_experts"],
        n_shared_experts=hp["n_shared_experts"],
        scoring_func="sqrtsoftplus",
        norm_topk_prob=True,
        routed_scaling_factor=hp["route_scale"],
        # HF's YaRN derives factor = max_position_embeddings / original_max_position_embeddings
        max_position_embeddings=int(round(hp["original_seq_len"] * hp["rope_factor"])),
        rope_theta=hp["rope_theta"],
        compress_rope_theta=hp["compress_rope_theta"],
        layer_types=[rt[r] for r in hp["compress_ratios"][:n]],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
        mlp_layer_types=["hash_moe" if i < hp["n_hash_layers"] else "moe" for i in range(n)],
        hc_mult=hp["hc_mult"],
        hc_sinkhorn_iters=hp["hc_sinkhorn_iters"],
        hc_eps=hp["hc_eps"],
        swiglu_limit=hp["swiglu_limit"],
        sliding_window=hp["window_size"],
        o_groups=hp["o_groups"],
        o_lora_rank=hp["o_lora_rank"],
        index_n_heads=hp["index_n_heads"],
        index_head_dim=hp["index_head_dim"],
        index_topk=hp["index_topk"],
        num_nextn_predict_layers=0,
        rms_norm_eps=hp["norm_eps"],
        partial_rotary_factor=hp["rope_head_dim"] / hp["head_dim"],
        rope_parameters={
            "main": {"rope_type": "default", "rope_theta": hp["rope_theta"],
                     "partial_rotary_factor": hp["rope_head_dim"] / hp["head_dim"]},
            "compress": {"rope_type": "yarn", "rope_theta": hp["compress_rope_theta"],
                         "partial_rotary_factor": hp["rope_head_dim"] / hp["head_dim"],
                         "factor": hp["rope_factor"],
                         "original_max_position_embeddings": hp["original_seq_len"],
                         "beta_fast": hp["beta_fast"], "beta_slow": hp["beta_slow"],
                         "attention_factor": 1.0},
        },
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        use_cache=True,
    )


def hf_legacy_config_kwargs(hp: Dict[str, Any]) -> Dict[str, Any]:
    """Same config in the legacy/official-checkpoint spelling (compress_ratios, num_hash_layers,
    qk_rope_head_dim, rope_scaling) - the form the HF hub config.json of DeepSeek-V4-Flash uses."""
    kw = hf_config_kwargs(hp)
    for k in ("layer_types", "mlp_layer_types", "partial_rotary_factor", "rope_parameters", "compress_rates"):
        kw.pop(k)
    kw.update(
        compress_ratios=list(hp["compress_ratios"][:hp["n_layers"]]),
        num_hash_layers=hp["n_hash_layers"],
        qk_rope_head_dim=hp["rope_head_dim"],
        rope_scaling={"type": "yarn", "rope_type": "yarn", "factor": hp["rope_factor"],
                      "original_max_position_embeddings": hp["original_seq_len"],
                      "beta_fast": hp["beta_fast"], "beta_slow": hp["beta_slow"]},
    )
    return kw


# HF parameter name candidates (transformers 5.17 first); `{L}` = layer index. Several candidates
# are listed where the deepseek_v4 modeling file changed names during its development; the first
# one present in the instantiated model's state_dict wins.
HF_TOP = {
    "embed.weight": ["model.embed_tokens.weight"],
    "head.weight": ["lm_head.weight"],
    "norm.weight": ["model.norm.weight"],
    "hc_head_fn": ["model.hc_head.hc_fn", "model.hc_head.fn"],
    "hc_head_base": ["model.hc_head.hc_base", "model.hc_head.base"],
    "hc_head_scale": ["model.hc_head.hc_scale", "model.hc_head.scale"],
}
HF_LAYER = {
    "hc_attn_fn": ["attn_hc.fn"],
    "hc_attn_base": ["attn_hc.base"],
    "hc_attn_scale": ["attn_hc.scale"],
    "hc_ffn_fn": ["ffn_hc.fn"],
    "hc_ffn_base": ["ffn_hc.base"],
    "hc_ffn_scale": ["ffn_hc.scale"],
    "attn_norm.weight": ["input_layernorm.weight"],
    "ffn_norm.weight": ["post_attention_layernorm.weight"],
    "attn.wq_a.weight": ["self_attn.q_a_proj.weight"],
    "attn.q_norm.weight": ["self_attn.q_a_norm.weight", "self_attn.q_a_layernorm.weight"],
    "attn.wq_b.weight": ["self_attn.q_b_proj.weight"],
    "attn.wkv.weight": ["self_attn.kv_proj.weight"],
    "attn.kv_norm.weight": ["self_attn.kv_norm.weight"],
    "attn.attn_sink": ["self_attn.sinks"],
    "attn.wo_a.weight": ["self_attn.o_a_proj.weight"],
    "attn.wo_b.weight": ["self_attn.o_b_proj.weight"],
    "attn.compressor.ape": ["self_attn.compressor.position_bias"],
    "attn.compressor.wkv.weight": ["self_attn.compressor.kv_proj.weight"],
    "attn.compressor.wgate.weight": ["self_attn.compressor.gate_proj.weight"],
    "attn.compressor.norm.weight": ["self_attn.compressor.kv_norm.weight"],
    "attn.indexer.wq_b.weight": ["self_attn.compressor.indexer.q_b_proj.weight"],
    "attn.indexer.weights_proj.weight": ["self_attn.compressor.indexer.scorer.weights_proj.weight",
                                         "self_attn.compressor.indexer.weights_proj.weight"],
    "attn.indexer.compressor.ape": ["self_attn.compressor.indexer.position_bias"],
    "attn.indexer.compressor.wkv.weight": ["self_attn.compressor.indexer.kv_proj.weight"],
    "attn.indexer.compressor.wgate.weight": ["self_attn.compressor.indexer.gate_proj.weight"],
    "attn.indexer.compressor.norm.weight": ["self_attn.compressor.indexer.kv_norm.weight"],
    "ffn.gate.weight": ["mlp.gate.weight"],
    "ffn.gate.bias": ["mlp.gate.e_score_correction_bias"],
    "ffn.gate.tid2eid": ["mlp.gate.tid2eid"],
    "ffn.shared_experts.w1.weight": ["mlp.shared_experts.gate_proj.weight"],
    "ffn.shared_experts.w3.weight": ["mlp.shared_experts.up_proj.weight"],
    "ffn.shared_experts.w2.weight": ["mlp.shared_experts.down_proj.weight"],
}
HF_EXPERTS_GATE_UP = ["mlp.experts.gate_up_proj"]
HF_EXPERTS_DOWN = ["mlp.experts.down_proj"]


def hf_state_dict(off_sd: Dict[str, np.ndarray], hp: Dict[str, Any], hf_keys: Dict[str, Tuple[int, ...]],
                  ) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Build an HF state dict (numpy) from the official-named dict, choosing among candidate names the one
    present in `hf_keys` (name -> shape of the instantiated HF model's state_dict).
    Returns (state dict, list of problems)."""
    out: Dict[str, np.ndarray] = {}
    problems: List[str] = []

    def pick(cands: List[str]) -> Optional[str]:
        for c in cands:
            if c in hf_keys:
                return c
        return None

    def put(src_key: str, cands: List[str], arr: np.ndarray):
        k = pick(cands)
        if k is None:
            problems.append(f"no HF parameter for {src_key} (tried {cands})")
            return
        out[k] = arr

    for o, cands in HF_TOP.items():
        if o in off_sd:
            put(o, cands, off_sd[o])
    for L in range(hp["n_layers"]):
        op = f"layers.{L}."
        hpfx = f"model.layers.{L}."
        for o, cands in HF_LAYER.items():
            if op + o in off_sd:
                arr = off_sd[op + o]
                if o == "ffn.gate.tid2eid":
                    arr = arr.astype(np.int64)
                put(op + o, [hpfx + c for c in cands], arr)
        n_e = hp["n_routed_experts"]
        if f"{op}ffn.experts.0.w1.weight" in off_sd:
            w1 = np.stack([off_sd[f"{op}ffn.experts.{e}.w1.weight"] for e in range(n_e)])  # [E, F, D]
            w3 = np.stack([off_sd[f"{op}ffn.experts.{e}.w3.weight"] for e in range(n_e)])
            w2 = np.stack([off_sd[f"{op}ffn.experts.{e}.w2.weight"] for e in range(n_e)])  # [E, D, F]
            put(op + "ffn.experts.*.w1|w3", [hpfx + c for c in HF_EXPERTS_GATE_UP], np.concatenate([w1, w3], axis=1))
            put(op + "ffn.experts.*.w2", [hpfx + c for c in HF_EXPERTS_DOWN], w2)
    for k, shape in hf_keys.items():
        if k not in out:
            problems.append(f"HF parameter/buffer not filled from the GGUF: {k} {tuple(shape)}")
        elif tuple(out[k].shape) != tuple(shape):
            problems.append(f"shape mismatch {k}: from GGUF {tuple(out[k].shape)} vs HF {tuple(shape)}")
    for k in out:
        if k not in hf_keys:
            problems.append(f"mapped tensor has no HF key: {k}")
    return out, problems


# ----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mtp")
    ap.add_argument("--gguf-py")
    a = ap.parse_args()
    setup_gguf_py(a.gguf_py)
    g = GGUFFile(a.model)
    m = GGUFFile(a.mtp) if a.mtp else None
    hp = hparams(g)
    print("hparams:", hp)
    for f in [g] + ([m] if m else []):
        print(f"--- {f.path}: {len(f.tensors)} tensors")
        for n in f.tensors:
            print(f"  {n:48s} {f.type_name(n):8s} ne={f.ne(n)}")
    sd, unmapped = official_state_dict(g, m, hp)
    print(f"official tensors: {len(sd)}; unmapped GGUF tensors: {unmapped or 'none'}")
    return 0 if not unmapped else 1


if __name__ == "__main__":
    raise SystemExit(main())
