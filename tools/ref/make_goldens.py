"""Golden-reference generator for dsv4 (one entry point).

  python3 tools/ref/make_goldens.py --model M.gguf [--mtp M-mtp.gguf] --tokens-seed S --n-tokens N \
      --out DIR [--device cuda|cpu] [--which official,hf] [--tokens-file F]

Writes into DIR (see manifest.json there for every file, shape and meaning):
  tokens.npy                                 int32 [N]
  logits_official_qat_{off,on}.npy           float32 [N, vocab]  official model.py, one-shot prefill, start_pos 0
  logits_official_chunked_qat_off.npy        float32 [N, vocab]  37-token prefill, then one token per call
  mtp_logits_official_qat_{off,on}.npy       float32 [N, vocab]  (with --mtp) MTPBlock on the final HC state
  logits_hf.npy, logits_hf_chunked.npy       float32 [N, vocab]  HF transformers DeepseekV4ForCausalLM (QAT n/a)
  margin_expert_qat_{off,on}.npy             float32 [N, n_bias_layers]   6th-best minus 7th-best biased score
  margin_indexer_qat_{off,on}.npy            float32 [N, n_ratio4_layers] k-th minus (k+1)-th indexer score
  mtp_margin_expert_qat_{off,on}.npy         float32 [N]
  inter_qat_{off,on}_L{l}_{stage}.npy        per-stage intermediates of layers --inter-layers
  manifest.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import kernel_standin  # noqa: E402
import load_gguf  # noqa: E402
import run_official  # noqa: E402

STAGE_MEANING = {
    "hc_in": "HC state entering the layer [P, hc, dim] (4 streams)",
    "attn_in": "attention sublayer input = RMSNorm(HCPre(hc_in), attn_norm) [P, dim]",
    "q": "query after wq_b, per-head RMS (no weight) and RoPE on the last rope dims [P, heads, head_dim]",
    "kv_raw": "raw KV row after kv_norm, RoPE and (QAT on) FP8 simulation of the nope dims [P, head_dim]",
    "attn_out": "attention sublayer output (after wo_b, before HC post) [P, dim]",
    "hc_mid": "HC state after the attention HC post = input of the FFN HC pre [P, hc, dim]",
    "ffn_in": "MoE input = RMSNorm(HCPre(hc_mid), ffn_norm) [P, dim]",
    "router_ids": "selected expert ids for ALL positions [N, k] (hash layers: tid2eid[token]; order as returned)",
    "router_weights": "routing weights for ALL positions [N, k] (renormalised unbiased scores x route_scale), same order as router_ids",
    "moe_out": "MoE output (routed + shared experts, before HC post) [P, dim]",
    "hc_out": "HC state leaving the layer [P, hc, dim]",
    "comp_rows": "all main-attention compressed KV rows emitted during the prefill [N//ratio, head_dim] "
                 "(after pooling, RMSNorm, RoPE at position i*ratio, FP8 sim when QAT on)",
    "indexer_rows": "all indexer compressed rows emitted during the prefill [N//4, index_head_dim] "
                    "(after pooling, RMSNorm, RoPE, Hadamard; FP4 sim when QAT on)",
    "indexer_scores": "indexer scores of the query at each position over all N//4 rows [P, N//4]; rows not yet "
                      "visible (c >= (p+1)//4) are -inf",
    "indexer_topk": "selected compressed-row ids [P, min(top_k, N//4)] in score order (harness tie rule), -1 = "
                    "not visible",
}


def parse_rows(spec: str, n: int):
    spec = spec.strip()
    if spec == "all":
        return None
    if spec.startswith("every:"):
        k = int(spec.split(":", 1)[1])
        r = list(range(0, n, k)) + [n - 1]
    elif spec.startswith("last:"):
        m = int(spec.split(":", 1)[1])
        r = list(range(max(0, n - m), n))
    else:
        r = [int(x) if int(x) >= 0 else n + int(x) for x in spec.split(",") if x.strip()]
    r = sorted(set(p for p in r if 0 <= p < n))
    return np.array(r, dtype=np.int32)


def default_inter_layers(hp: Dict[str, Any]) -> List[int]:
    want = []
    for r in (0, 4, 128):
        for i in range(hp["n_layers"]):
            if hp["compress_ratios"][i] == r:
                want.append(i)
                break
    return sorted(set(want))


def cmp_stats(a: np.ndarray, b: np.ndarray, first_tie: Optional[int]) -> Dict[str, Any]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)).max(axis=1)
    st = {"max_abs": float(d.max()), "argmax_agree": float((a.argmax(1) == b.argmax(1)).mean()),
          "worst_positions": [int(i) for i in np.argsort(-d)[:5]]}
    if first_tie is not None:
        st["max_abs_before_first_tie"] = float(d[:first_tie].max()) if first_tie > 0 else None
    return st


def first_tie_position(margins: List[np.ndarray], eps: float) -> Optional[int]:
    pos = []
    for m in margins:
        if m is None or m.size == 0:
            continue
        m2 = m.reshape(m.shape[0], -1)
        bad = np.where((m2 < eps).any(axis=1))[0]
        if bad.size:
            pos.append(int(bad[0]))
    return min(pos) if pos else None


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="main GGUF")
    ap.add_argument("--mtp", help="MTP GGUF (tensors mtp.0.*)")
    ap.add_argument("--tokens-seed", type=int, default=1)
    ap.add_argument("--n-tokens", type=int, default=300)
    ap.add_argument("--tokens-file", help=".npy or whitespace/comma separated ids (overrides --tokens-seed)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--which", default="official,hf", help="comma list of: official, hf")
    ap.add_argument("--gguf-py", help="gguf-py dir (else $DSV4_GGUF_PY, .ref/gguf-py, tests/oracles/.cache/gguf-py)")
    ap.add_argument("--official-dir", help="official inference/ dir (else $DSV4_OFFICIAL_DIR, .ref/official)")
    ap.add_argument("--inter-layers", help="comma list (default: first layer of ratio 0, 4 and 128)")
    ap.add_argument("--inter-positions", default="0,1,127,128,255,256,511,-1",
                    help="comma list; negative = from the end (-1 = N-1)")
    ap.add_argument("--tie-break", choices=["stable", "native"], default="stable",
                    help="router/indexer top-k rule for exact ties (stable = lower index first)")
    ap.add_argument("--chunk-first", type=int, default=run_official.CHUNK_FIRST)
    ap.add_argument("--generator", default=None,
                    help="JSON describing how the model was generated (dsv4 gen-tiny preset/seed/f32/mtp); "
                         "stored as manifest['generator_spec'] so tests can regenerate the same model")
    ap.add_argument("--no-chunked", action="store_true",
                    help="skip the (slow, Python-bound) chunked-prefill + decode reference runs")
    ap.add_argument("--tie-eps", type=float, default=1e-4, help="margin below which a position counts as a tie "
                    "in the summary statistics")
    ap.add_argument("--logit-rows", default="all",
                    help="rows of the logits files to store: all | every:K (0,K,2K,..,N-1) | last:M | comma list; "
                         "when not all, logit_rows.npy lists them (statistics in the manifest use all rows)")
    ap.add_argument("--max-mb", type=float, default=8.0, help="warn when the directory exceeds this size")
    a = ap.parse_args()

    which = [w.strip() for w in a.which.split(",") if w.strip()]
    for w in which:
        if w not in ("official", "hf"):
            ap.error(f"--which: unknown entry {w!r}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    files: Dict[str, Dict[str, Any]] = {}

    def save(name: str, arr: np.ndarray, meaning: str, **extra):
        np.save(out / name, arr)
        files[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "meaning": meaning, **extra}

    load_gguf.setup_gguf_py(a.gguf_py)
    main_g = load_gguf.GGUFFile(a.model)
    mtp_g = load_gguf.GGUFFile(a.mtp) if a.mtp else None
    hp = load_gguf.hparams(main_g)
    if a.tokens_file:
        tokens = run_official.load_tokens(a.tokens_file)
        tok_desc = f"read from {a.tokens_file}"
    else:
        tokens = run_official.splitmix_tokens(a.tokens_seed, a.n_tokens, hp["vocab_size"])
        tok_desc = (f"splitmix64(seed={a.tokens_seed}): s += 0x9E3779B97F4A7C15; z = s; "
                    "z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB; "
                    f"z ^= z>>31; token = z mod {hp['vocab_size']} (64-bit wrapping arithmetic)")
    if tokens.min() < 0 or tokens.max() >= hp["vocab_size"]:
        raise SystemExit(f"token ids out of range [0, {hp['vocab_size']})")
    N = int(len(tokens))
    save("tokens.npy", tokens.astype(np.int32), "input token ids; " + tok_desc)
    rows = parse_rows(a.logit_rows, N)
    if rows is not None:
        save("logit_rows.npy", rows, "positions whose logits rows are stored in every logits_*.npy file (in order)")

    def save_logits(name: str, lg: np.ndarray, meaning: str, **extra):
        if rows is not None:
            lg = lg[rows]
            meaning += " [only the rows listed in logit_rows.npy]"
        save(name, lg.astype(np.float32), meaning, **extra)
    positions = sorted(set(p if p >= 0 else N + p for p in (int(x) for x in a.inter_positions.split(","))
                           if -N <= p < N))
    layers = [int(x) for x in a.inter_layers.split(",")] if a.inter_layers else default_inter_layers(hp)
    summary: Dict[str, Any] = {}
    versions: Dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "kernel_standin": kernel_standin.STANDIN_VERSION, "gguf_py": load_gguf.gguf_py_info(),
    }
    device_name = "cpu"
    if a.device.startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(0)
    margins_off: List[np.ndarray] = []
    logits: Dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- official
    if "official" in which:
        mod = run_official.import_official(a.official_dir)
        versions["official"] = run_official.official_versions(mod)
        sd, unmapped = load_gguf.official_state_dict(main_g, mtp_g, hp)
        args_kw = load_gguf.official_model_args(hp, N, mtp_g is not None)
        model = run_official.build_official(mod, args_kw, sd, unmapped, a.device, a.tie_break)
        del sd
        for qat in ("off", "on"):
            kernel_standin.set_qat(qat == "on")
            t0 = time.time()
            rec = run_official.Recorder(model, layers, positions, N)
            lg, h_final = run_official.run_prefill(model, tokens, a.device, rec, want_hidden=True)
            logits[f"official_qat_{qat}"] = lg
            save_logits(f"logits_official_qat_{qat}.npy", lg,
                 "official model.py (fp32, torch kernel stand-ins), one-shot prefill of all N tokens at start_pos 0; "
                 "row p = next-token logits after tokens[0..p]", qat=qat)
            inter = rec.finalize()
            if mtp_g is not None:
                mlg = run_official.run_mtp(model, h_final, tokens, a.device)
                save_logits(f"mtp_logits_official_qat_{qat}.npy", mlg,
                     "MTPBlock.forward(x=H, start_pos=0, input_ids=S) with H = final HC state of the main model "
                     "(output of the last block, before hc_head/head) for all N positions of the one-shot prefill "
                     "under the same QAT setting, and S[p] = tokens[p+1] for p < N-1, S[N-1] = 0. The MTP block "
                     "runs as a one-shot prefill over positions 0..N-1 (its own window cache, RoPE at p, bias "
                     "routing); e = enorm(embed(S[p])), x = e_proj(e) + h_proj(hnorm(H[p])) per stream; logits = "
                     "head(mtp.norm(hc_head_mtp(Block(x)))). Row p is the MTP prediction from the state after "
                     "token p and the embedding of token p+1 (DeepSeek-V3 convention: it predicts token p+2).",
                     qat=qat)
            em, e_layers, im, i_layers, mm = rec.margins()
            rec.remove()
            save(f"margin_expert_qat_{qat}.npy", em,
                 "per position (row) and bias-routed layer (column, layer ids in 'layers'): biased router score "
                 "(sqrt(softplus(logit)) + exp_probs_b) of the k-th best minus the (k+1)-th best expert "
                 "(k = expert_used_count); small = the expert selection is a near-tie", layers=e_layers, qat=qat)
            save(f"margin_indexer_qat_{qat}.npy", im,
                 "per position and ratio-4 layer (layer ids in 'layers'): indexer score of the top_k-th best minus "
                 "the (top_k+1)-th best visible compressed row when the visible rows ((p+1)//4) exceed top_k, "
                 "+inf otherwise; 0 = exact tie (resolved by the harness tie rule)", layers=i_layers, qat=qat)
            if mm is not None:
                save(f"mtp_margin_expert_qat_{qat}.npy", mm,
                     "MTP block router: k-th minus (k+1)-th biased score per position", qat=qat)
            if qat == "off":
                margins_off = [em, im] + ([mm] if mm is not None else [])
            for k, v in sorted(inter.items()):
                L, stage = k.split("_", 1)
                meaning = STAGE_MEANING.get(stage, stage)
                if v.dtype == np.float64:
                    v = v.astype(np.float32)
                save(f"inter_qat_{qat}_{k}.npy", v, meaning, layer=int(L[1:]), qat=qat,
                     positions=(positions if not stage.startswith(("router", "comp_rows", "indexer_rows")) else "all"))
            print(f"make_goldens: official QAT {qat}: {time.time() - t0:.1f}s", file=sys.stderr)
            del h_final
        kernel_standin.set_qat(False)
        t0 = time.time()
        lg = None if a.no_chunked else run_official.run_chunked(model, tokens, a.device, a.chunk_first)
        if lg is not None:
            logits["official_chunked_qat_off"] = lg
            save_logits("logits_official_chunked_qat_off.npy", lg,
             f"official model.py, QAT off: prefill of the first {a.chunk_first} tokens at start_pos 0, then one "
             "token per call (start_pos = p); row p = next-token logits after tokens[0..p]", qat="off")
            print(f"make_goldens: official chunked: {time.time() - t0:.1f}s", file=sys.stderr)
        del model

    # ---------------------------------------------------------------- HF
    if "hf" in which:
        import run_hf
        sd, _ = load_gguf.official_state_dict(main_g, None, hp)
        model, info = run_hf.build_hf(hp, sd, a.device, a.tie_break)
        del sd
        versions["transformers"] = info.get("transformers")
        versions["hf_setup"] = info
        t0 = time.time()
        lg = run_hf.hf_prefill(model, tokens, a.device)
        logits["hf"] = lg
        save_logits("logits_hf.npy", lg,
             "HF transformers DeepseekV4ForCausalLM (fp32, eager), one-shot forward without cache; no QAT simulation")
        if not a.no_chunked:
            lg = run_hf.hf_chunked(model, tokens, a.device, a.chunk_first)
            logits["hf_chunked"] = lg
            save_logits("logits_hf_chunked.npy", lg,
                 f"HF: {a.chunk_first}-token prefill with use_cache=True, then one token per call with the "
                 "returned cache and explicit position_ids")
        print(f"make_goldens: HF: {time.time() - t0:.1f}s", file=sys.stderr)
        del model

    # ---------------------------------------------------------------- summary
    ft = first_tie_position(margins_off, a.tie_eps)
    pairs = [("official_qat_off", "official_chunked_qat_off"), ("official_qat_off", "hf"),
             ("hf", "hf_chunked"), ("official_qat_off", "official_qat_on")]
    for x, y in pairs:
        if x in logits and y in logits:
            summary[f"{x} vs {y}"] = cmp_stats(logits[x], logits[y], ft)
    summary["first_position_with_margin_below_tie_eps(qat_off)"] = ft
    summary["tie_eps"] = a.tie_eps

    cmd = "python3 " + " ".join(shlex.quote(x) for x in sys.argv)
    total = sum((out / f).stat().st_size for f in files)
    manifest = {
        "generator": "tools/ref/make_goldens.py",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": cmd,
        "cwd_note": "run from the repository root; .ref/official (official inference code) and .ref/gguf-py must exist",
        "device": a.device, "device_name": device_name,
        "model": {"path": a.model, "md5": load_gguf.file_md5(a.model), "bytes": os.path.getsize(a.model)},
        "mtp": ({"path": a.mtp, "md5": load_gguf.file_md5(a.mtp), "bytes": os.path.getsize(a.mtp)} if a.mtp else None),
        "generator_spec": (json.loads(a.generator) if a.generator else None),
        "hparams": hp,
        "n_tokens": N,
        "versions": versions,
        "conventions": {
            "precision": "float32 everywhere (torch default dtype fp32; official ModelArgs dtype='bf16' then "
                         "module.float(); expert_dtype=None; scale_fmt='ue8m0'); TF32 disabled",
            "qat": "qat=on: FP8 e4m3 simulation (64-blocks, UE8M0 scales, RNE) of the nope dims of raw and compressed "
                   "KV rows, FP4 e2m1 simulation (32-blocks) of indexer q and indexer rows after the Hadamard "
                   "rotation, as in the current official release (LINEAGE (b)); qat=off: those roundings are the "
                   "identity (Hadamard kept). HF has no QAT: compare it with qat=off.",
            "shared_expert_clamp": "swiglu_limit applied to the shared expert (current official release)",
            "tie_break": a.tie_break + (" (router and indexer top-k: score descending, lower index first, applied "
                                        "in the official and the HF runs)" if a.tie_break == "stable" else
                                        " (torch.topk order)"),
            "logits_rows": "row p = logits for the token following position p",
            "chunked": f"{a.chunk_first}-token prefill then one token per call",
            "intermediate_positions": positions,
            "intermediate_layers": layers,
        },
        "summary": summary,
        "files": files,
        "total_bytes": total,
        "wall_seconds": round(time.time() - t_start, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json_default))
    print(json.dumps(summary, indent=1))
    mb = (total + (out / "manifest.json").stat().st_size) / 2 ** 20
    print(f"make_goldens: wrote {len(files)} files + manifest.json to {out} ({mb:.2f} MiB)", file=sys.stderr)
    if mb > a.max_mb:
        print(f"make_goldens: WARNING directory is {mb:.2f} MiB > {a.max_mb} MiB (logits are N x vocab float32)",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except load_gguf.MappingError as e:
        print(f"make_goldens: mapping error:\n{e}", file=sys.stderr)
        raise SystemExit(2)
    except Exception as e:
        if type(e).__name__ == "HFError":
            print(f"make_goldens: HF error:\n{e}", file=sys.stderr)
            raise SystemExit(3)
        raise
