"""Run HF transformers' DeepseekV4ForCausalLM (5.17, GPU machines only) on a GGUF, in float32, eager attention.

* config: DeepseekV4Config built from the GGUF metadata (load_gguf.hf_config_kwargs; modern field names
  layer_types / mlp_layer_types / rope_parameters{main,compress}; falls back to the legacy spelling
  compress_ratios / num_hash_layers / qk_rope_head_dim / rope_scaling if the modern one is rejected).
* weights: official-named tensors (load_gguf.official_state_dict) renamed to HF names; experts stacked as
  gate_up_proj = cat(w1, w3) [E, 2F, D] and down_proj = w2 [E, D, F]; compressor ape -> position_bias;
  HC fn/base/scale; tid2eid as int64 buffer; gate bias -> e_score_correction_bias. Loaded with
  load_state_dict(strict=True) after checking every key and shape (errors list all problems).
* sanity checks after loading: YaRN inverse frequencies of the "compress" rope and the plain "main" rope
  vs the official formula, attention_scaling == 1, lm_head not tied to the embedding.
* HF has no FP8/FP4 QAT simulation and no MTP: compare against the official QAT-off logits.
* top-k tie rule: the router/indexer top-k are wrapped with the same stable rule as the official run
  (score desc, lower index first) unless --tie-break native.

Stand-alone:
  python3 tools/ref/run_hf.py --model M.gguf --tokens-file tokens.npy --out DIR [--device cuda]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import kernel_standin  # noqa: E402
import load_gguf  # noqa: E402

CHUNK_FIRST = 37


class HFError(RuntimeError):
    pass


def import_hf():
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise HFError(f"transformers is not importable here ({e}); the HF path runs on the GPU machines") from e
    try:
        from transformers import DeepseekV4Config, DeepseekV4ForCausalLM  # type: ignore
    except ImportError:
        try:
            from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config  # type: ignore
            from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4ForCausalLM  # type: ignore
        except ImportError as e:
            raise HFError(f"transformers {transformers.__version__} has no deepseek_v4 model ({e})") from e
    return transformers, DeepseekV4Config, DeepseekV4ForCausalLM


def build_hf_config(Config, hp: Dict[str, Any]):
    errors = []
    for label, kw in (("modern", load_gguf.hf_config_kwargs(hp)), ("legacy", load_gguf.hf_legacy_config_kwargs(hp))):
        try:
            cfg = Config(**kw)
        except Exception as e:  # strict dataclass configs reject unknown/ill-typed fields
            errors.append(f"{label}: {type(e).__name__}: {e}")
            continue
        for attr in ("_attn_implementation", "_experts_implementation"):
            try:
                setattr(cfg, attr, "eager")
            except Exception:
                pass
        problems = check_hf_config(cfg, hp)
        if problems:
            errors.append(f"{label}: config built but inconsistent: " + "; ".join(problems))
            continue
        print(f"run_hf: DeepseekV4Config built with the {label} field names", file=sys.stderr)
        return cfg, label
    raise HFError("could not build a consistent DeepseekV4Config:\n  " + "\n  ".join(errors))


def check_hf_config(cfg, hp) -> List[str]:
    rt = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}
    n = hp["n_layers"]
    p = []
    want_lt = [rt[r] for r in hp["compress_ratios"][:n]]
    if list(getattr(cfg, "layer_types", []) or []) != want_lt:
        p.append(f"layer_types={getattr(cfg, 'layer_types', None)} != {want_lt}")
    want_mlp = ["hash_moe" if i < hp["n_hash_layers"] else "moe" for i in range(n)]
    if list(getattr(cfg, "mlp_layer_types", []) or []) != want_mlp:
        p.append(f"mlp_layer_types={getattr(cfg, 'mlp_layer_types', None)} != {want_mlp}")
    for attr, want in (("hidden_size", hp["dim"]), ("num_hidden_layers", n), ("head_dim", hp["head_dim"]),
                       ("num_attention_heads", hp["n_heads"]), ("sliding_window", hp["window_size"]),
                       ("index_topk", hp["index_topk"]), ("num_experts_per_tok", hp["n_activated_experts"]),
                       ("n_routed_experts", hp["n_routed_experts"]), ("o_groups", hp["o_groups"]),
                       ("qk_rope_head_dim", hp["rope_head_dim"]), ("tie_word_embeddings", False)):
        if not hasattr(cfg, attr):
            print(f"run_hf: note: config has no attribute {attr} (not checked)", file=sys.stderr)
            continue
        v = getattr(cfg, attr)
        if v != want:
            p.append(f"{attr}={v} != {want}")
    for attr, want in (("routed_scaling_factor", hp["route_scale"]), ("swiglu_limit", hp["swiglu_limit"]),
                       ("rms_norm_eps", hp["norm_eps"]), ("hc_eps", hp["hc_eps"])):
        v = getattr(cfg, attr, None)
        if v is None or abs(float(v) - float(want)) > 1e-6 * max(1.0, abs(float(want))):
            p.append(f"{attr}={v} != {want}")
    return p


def official_inv_freq(dim: int, base: float, original_seq_len: int, factor: float, beta_fast: float,
                      beta_slow: float) -> torch.Tensor:
    """The official precompute_freqs_cis frequency formula (OFF/model.py), fp32."""
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim))
    if original_seq_len > 0:
        def corr(nrot):
            return dim * math.log(original_seq_len / (nrot * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(corr(beta_fast)), 0)
        high = min(math.ceil(corr(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs


def check_hf_rope(model, hp) -> List[str]:
    p = []
    rot = getattr(getattr(model, "model", model), "rotary_emb", None)
    if rot is None:
        return ["model.model.rotary_emb not found (cannot verify RoPE)"]
    rd = hp["rope_head_dim"]
    want = {
        "main": official_inv_freq(rd, hp["rope_theta"], 0, 1.0, hp["beta_fast"], hp["beta_slow"]),
        "compress": official_inv_freq(rd, hp["compress_rope_theta"], hp["original_seq_len"], hp["rope_factor"],
                                      hp["beta_fast"], hp["beta_slow"]),
    }
    for lt, w in want.items():
        got = getattr(rot, f"{lt}_inv_freq", None)
        if got is None:
            p.append(f"rotary_emb has no {lt}_inv_freq")
            continue
        got = got.detach().float().cpu()
        if got.shape != w.shape:
            p.append(f"{lt}_inv_freq shape {tuple(got.shape)} != {tuple(w.shape)}")
            continue
        rel = ((got - w).abs() / w.abs()).max().item()
        if rel > 1e-6:
            p.append(f"{lt}_inv_freq differs from the official formula (max rel {rel:.3e}): {got.tolist()} vs {w.tolist()}")
        sc = getattr(rot, f"{lt}_attention_scaling", 1.0)
        if abs(float(sc) - 1.0) > 1e-7:
            p.append(f"{lt}_attention_scaling = {sc} (official applies no YaRN mscale)")
    return p


def install_hf_topk(model, tie_break: str) -> None:
    """Same tie rule as the official run inside the HF router/indexer forwards."""
    if tie_break != "stable":
        return
    names = ("DeepseekV4TopKRouter", "DeepseekV4Indexer")
    native_t = torch.Tensor.topk
    native_f = torch.topk
    n = 0
    for m in model.modules():
        if type(m).__name__ not in names:
            continue
        orig = m.forward

        def fwd(*a, _orig=orig, **k):
            torch.Tensor.topk = kernel_standin.stable_topk
            torch.topk = kernel_standin.stable_topk
            try:
                return _orig(*a, **k)
            finally:
                torch.Tensor.topk = native_t
                torch.topk = native_f

        m.forward = fwd
        n += 1
    if n == 0:
        print("run_hf: WARNING no DeepseekV4TopKRouter/DeepseekV4Indexer modules found for the tie rule", file=sys.stderr)


def build_hf(hp: Dict[str, Any], off_sd: Dict[str, np.ndarray], device: str, tie_break: str = "stable"):
    transformers, Config, Model = import_hf()
    torch.set_default_dtype(torch.float32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except Exception:
        pass
    if hasattr(torch, "set_float32_matmul_precision"):
        torch.set_float32_matmul_precision("highest")
    cfg, label = build_hf_config(Config, hp)
    model = Model(cfg)
    model = model.float().eval()
    # eager attention (the only one V4 supports) and the plain per-expert loop (no grouped_mm kernels in fp32)
    for setter in ("set_attn_implementation", "set_experts_implementation"):
        fn = getattr(model, setter, None)
        if fn is not None:
            try:
                fn("eager")
            except Exception as e:
                print(f"run_hf: note: model.{setter}('eager') failed: {e}", file=sys.stderr)
    hf_sd = model.state_dict()
    hf_keys = {k: tuple(v.shape) for k, v in hf_sd.items()}
    sd, problems = load_gguf.hf_state_dict(off_sd, hp, hf_keys)
    if problems:
        raise HFError("GGUF -> HF mapping failed (HF state_dict has %d keys):\n  %s\nHF keys:\n    %s" % (
            len(hf_keys), "\n  ".join(problems), "\n    ".join(sorted(hf_keys))))
    tens = {k: torch.from_numpy(np.ascontiguousarray(v)).to(hf_sd[k].dtype) for k, v in sd.items()}
    res = model.load_state_dict(tens, strict=True)
    if getattr(res, "missing_keys", None) or getattr(res, "unexpected_keys", None):
        raise HFError(f"load_state_dict: missing={res.missing_keys} unexpected={res.unexpected_keys}")
    model = model.to(device)
    # the tie between lm_head and the embedding must not exist (tie_word_embeddings=False)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    if emb.data_ptr() == head.data_ptr():
        raise HFError("lm_head is tied to embed_tokens although tie_word_embeddings=False")
    rope_problems = check_hf_rope(model, hp)
    if rope_problems:
        raise HFError("HF RoPE does not match the official frequencies:\n  " + "\n  ".join(rope_problems))
    install_hf_topk(model, tie_break)
    info = {"transformers": transformers.__version__, "config_spelling": label,
            "attn_implementation": getattr(model.config, "_attn_implementation", None),
            "experts_implementation": getattr(model.config, "_experts_implementation", None)}
    return model, info


@torch.no_grad()
def hf_prefill(model, tokens: np.ndarray, device: str) -> np.ndarray:
    ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=device).view(1, -1)
    out = model(input_ids=ids, use_cache=False, logits_to_keep=0)
    return out.logits[0].float().cpu().numpy()


@torch.no_grad()
def hf_chunked(model, tokens: np.ndarray, device: str, first: int = CHUNK_FIRST) -> np.ndarray:
    """`first`-token prefill with use_cache=True, then one token per call with the returned cache and explicit
    position_ids."""
    ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=device).view(1, -1)
    n = ids.size(1)
    first = min(first, n)
    pos = torch.arange(n, device=device).view(1, -1)
    out = model(input_ids=ids[:, :first], position_ids=pos[:, :first], use_cache=True, logits_to_keep=0)
    cache = out.past_key_values
    if cache is None:
        raise HFError("HF forward with use_cache=True returned no past_key_values")
    logits = [out.logits[0].float().cpu()]
    for p in range(first, n):
        out = model(input_ids=ids[:, p:p + 1], position_ids=pos[:, p:p + 1], past_key_values=cache,
                    use_cache=True, logits_to_keep=0)
        cache = out.past_key_values
        logits.append(out.logits[0].float().cpu())
    return torch.cat(logits, 0).numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--gguf-py")
    ap.add_argument("--tokens-file", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tie-break", choices=["stable", "native"], default="stable")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from run_official import load_tokens
    tokens = load_tokens(a.tokens_file)
    g = load_gguf.GGUFFile(a.model, a.gguf_py)
    hp = load_gguf.hparams(g)
    sd, _ = load_gguf.official_state_dict(g, None, hp)
    model, info = build_hf(hp, sd, a.device, a.tie_break)
    print("run_hf:", info)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    np.save(os.path.join(a.out, "logits_hf.npy"), hf_prefill(model, tokens, a.device).astype(np.float32))
    np.save(os.path.join(a.out, "logits_hf_chunked.npy"), hf_chunked(model, tokens, a.device).astype(np.float32))
    print(f"wrote logits_hf.npy, logits_hf_chunked.npy in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
