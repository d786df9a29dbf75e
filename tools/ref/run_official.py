"""Run DeepSeek's official V4 `inference/model.py` (kept out of the repo, in <repo>/.ref/official/) on a GGUF,
in float32 with plain-torch kernel stand-ins (tools/ref/kernel_standin.py).

Patches applied to the imported official module (nothing is edited on disk):
  * `import kernel` resolves to kernel_standin (sys.modules["kernel"]).
  * `rotate_activation` -> Sylvester Hadamard in the working dtype (no fast_hadamard_transform, no bf16 assert).
  * `ParallelHead.get_logits` returns logits for all positions (official: last position only).
  * the shared expert of every block gets `swiglu_limit` (current official release, ARCH.md §0 LINEAGE(a)).
  * torch 1.13 lacks float8/float4 dtypes: placeholders are defined so the dtype comparisons are False.
Run mode: torch default dtype float32, ModelArgs(dtype="bf16", scale_fmt="ue8m0", scale_dtype="fp32",
expert_dtype=None), then the whole module is cast to float32 (no bf16 rounding anywhere).

Stand-alone:
  python3 tools/ref/run_official.py --model M.gguf [--mtp M-mtp.gguf] --n-tokens 300 --tokens-seed 1 \
      --qat off --out /tmp/o   # writes tokens.npy, logits_official_qat_off.npy (one-shot prefill)
make_goldens.py is the full entry point.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import kernel_standin  # noqa: E402
import load_gguf  # noqa: E402

OFFICIAL_MODEL_MD5 = "b01705c7d679f27484b811310622d575"  # initial HF release (ARCH.md §0)
OFFICIAL_KERNEL_MD5 = "92b6ea1927da4ccaafaeb299500ef080"
CHUNK_FIRST = 37


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def default_official_dir() -> Path:
    env = os.environ.get("DSV4_OFFICIAL_DIR")
    return Path(env) if env else REPO_ROOT / ".ref" / "official"


# ----------------------------------------------------------------------------------------------
# import + patch
# ----------------------------------------------------------------------------------------------
class _Placeholder:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<missing torch dtype {self.name}>"


_OFFICIAL = None


def import_official(official_dir: Optional[str] = None):
    global _OFFICIAL
    if _OFFICIAL is not None:
        return _OFFICIAL
    d = Path(official_dir) if official_dir else default_official_dir()
    mp = d / "model.py"
    if not mp.is_file():
        raise FileNotFoundError(f"official model.py not found at {mp} (copy DeepSeek's inference/ folder to "
                                f"<repo>/.ref/official/ or pass --official-dir / set DSV4_OFFICIAL_DIR)")
    md5 = md5_of(mp)
    if md5 != OFFICIAL_MODEL_MD5:
        print(f"run_official: WARNING model.py md5 {md5} != expected {OFFICIAL_MODEL_MD5} (initial HF release)",
              file=sys.stderr)
    for name in ("float4_e2m1fn_x2", "float8_e8m0fnu", "float8_e4m3fn"):
        if not hasattr(torch, name):
            setattr(torch, name, _Placeholder(name))
    sys.modules["kernel"] = kernel_standin
    spec = importlib.util.spec_from_file_location("dsv4_official_model", str(mp))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dsv4_official_model"] = mod
    spec.loader.exec_module(mod)
    # --- patches
    mod.rotate_activation = kernel_standin.rotate_activation

    def get_logits_all(self, x):
        return torch.nn.functional.linear(x.float(), self.weight)

    mod.ParallelHead.get_logits = get_logits_all
    mod._dsv4_official_dir = str(d)
    mod._dsv4_model_md5 = md5
    _OFFICIAL = mod
    return mod


def official_versions(mod) -> Dict[str, str]:
    d = Path(mod._dsv4_official_dir)
    return {"model.py_md5": md5_of(d / "model.py"), "kernel.py_md5(not used)": md5_of(d / "kernel.py"),
            "kernel_standin_md5": md5_of(HERE / "kernel_standin.py"), "official_dir": str(d)}


def set_torch_numerics():
    torch.set_default_dtype(torch.float32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    except Exception:
        pass
    if hasattr(torch, "set_float32_matmul_precision"):
        torch.set_float32_matmul_precision("highest")


def build_official(mod, args_kw: Dict[str, Any], sd_np, unmapped, device: str = "cpu",
                   tie_break: str = "stable"):
    set_torch_numerics()
    if device != "cpu" and hasattr(torch, "set_default_device"):
        torch.set_default_device(device)
    args = mod.ModelArgs(**args_kw)
    model = mod.Transformer(args)
    model = model.float()
    if device != "cpu":
        model = model.to(device)
    # shared expert clamp (current official release; the initial one had "# no swiglu_limit")
    for blk in list(model.layers) + list(model.mtp):
        blk.ffn.shared_experts.swiglu_limit = args.swiglu_limit
        g = blk.ffn.gate
        if g.hash and g.tid2eid.dtype != torch.int64:
            # the official Parameter is int32 but torch's gather() wants int64 indices (values unchanged)
            g.tid2eid = torch.nn.Parameter(torch.zeros(g.tid2eid.shape, dtype=torch.int64,
                                                       device=g.tid2eid.device), requires_grad=False)
    load_gguf.load_into_official(model, sd_np, unmapped)
    model.eval()
    install_topk_wrappers(model, tie_break)
    return model


@torch.no_grad()
def reset_state(model) -> None:
    """Zero every cache and put every compressor frontier back to its initial state (kv 0, score -inf)."""
    mod = _OFFICIAL
    for m in model.modules():
        if isinstance(m, mod.Compressor):
            m.kv_state.zero_()
            m.score_state.fill_(float("-inf"))
        for bn in ("kv_cache",):
            b = getattr(m, bn, None)
            if isinstance(b, torch.Tensor):
                b.zero_()


def install_topk_wrappers(model, tie_break: str = "stable") -> None:
    """Wrap forward() of every bias-routed Gate and every Indexer so that, inside them, Tensor.topk
    (a) uses the harness tie rule (tie_break="stable": score desc, lower index first; "native": torch.topk)
    and (b) stores a copy of the scored tensor in module._dsv4_scores when module._dsv4_capture is True."""
    mod = _OFFICIAL
    native = torch.Tensor.topk
    for m in model.modules():
        is_gate = isinstance(m, mod.Gate) and not m.hash
        if not (is_gate or isinstance(m, mod.Indexer)):
            continue
        if getattr(m, "_dsv4_wrapped", False):
            m._dsv4_tie_break = tie_break
            continue
        m._dsv4_wrapped = True
        m._dsv4_tie_break = tie_break
        m._dsv4_capture = False
        m._dsv4_scores = None
        orig_forward = m.forward

        def fwd(*a, _m=m, _orig=orig_forward, **k):
            def topk(t, *ta, **tk):
                if _m._dsv4_capture:
                    _m._dsv4_scores = t.detach().clone()
                if _m._dsv4_tie_break == "stable":
                    return kernel_standin.stable_topk(t, *ta, **tk)
                return native(t, *ta, **tk)

            torch.Tensor.topk = topk
            try:
                return _orig(*a, **k)
            finally:
                torch.Tensor.topk = native

        m.forward = fwd


# ----------------------------------------------------------------------------------------------
# instrumentation: intermediates + tie margins
# ----------------------------------------------------------------------------------------------
class Recorder:
    """Hooks on the official modules. Records, for the one-shot prefill:
      * tie margins for every bias-routed gate (6th-best minus 7th-best biased score) and every indexer
        (k-th minus (k+1)-th score where the visible rows exceed top_k, +inf otherwise);
      * per-stage intermediates of `layers` at `positions`."""

    def __init__(self, model, layers: Sequence[int], positions: Sequence[int], n_tokens: int):
        self.model = model
        self.mod = _OFFICIAL
        self.layers = list(layers)
        self.positions = [p for p in positions if 0 <= p < n_tokens]
        self.n = n_tokens
        self.handles = []
        self.saved: Dict[str, Any] = {}
        self.gate_scores: Dict[str, torch.Tensor] = {}    # name -> biased scores [N, E]
        self.index_scores: Dict[int, torch.Tensor] = {}   # layer -> scores [N, T] (masked = -inf)
        self.refs: Dict[str, torch.Tensor] = {}
        self._orig_methods = []
        self._captured = []
        self._install()

    def _install(self):
        model = self.model
        blocks = [(f"L{i}", i, b) for i, b in enumerate(model.layers)] + \
                 [(f"mtp{i}", None, b) for i, b in enumerate(model.mtp)]
        for name, idx, blk in blocks:
            gate = blk.ffn.gate
            if not gate.hash:
                if not getattr(gate, "_dsv4_wrapped", False):
                    raise RuntimeError("install_topk_wrappers() must run before Recorder()")
                gate._dsv4_capture = True
                self._captured.append((gate, name, self.gate_scores))
            if idx is not None and getattr(blk.attn, "compress_ratio", 0) == 4 and blk.attn.indexer is not None:
                blk.attn.indexer._dsv4_capture = True
                self._captured.append((blk.attn.indexer, idx, self.index_scores))
        for L in self.layers:
            blk = model.layers[L]
            pfx = f"L{L}_"
            self.handles.append(blk.register_forward_pre_hook(self._pre(pfx + "hc_in")))
            self.handles.append(blk.register_forward_hook(self._post(pfx + "hc_out")))
            self.handles.append(blk.attn.register_forward_pre_hook(self._pre(pfx + "attn_in")))
            self.handles.append(blk.attn.register_forward_hook(self._post(pfx + "attn_out")))
            self.handles.append(blk.ffn.register_forward_pre_hook(self._pre(pfx + "ffn_in")))
            self.handles.append(blk.ffn.register_forward_hook(self._post(pfx + "moe_out")))
            self.handles.append(blk.ffn.gate.register_forward_hook(self._gate(pfx)))
            # references whose storage is later modified in place by the official code:
            # q after per-head RMS + RoPE, raw kv after RoPE + FP8 simulation
            self.handles.append(blk.attn.wq_b.register_forward_hook(self._ref(pfx + "q")))
            self.handles.append(blk.attn.kv_norm.register_forward_hook(self._ref(pfx + "kv_raw")))
            if getattr(blk.attn, "indexer", None) is not None:
                self.handles.append(blk.attn.indexer.register_forward_hook(self._idx(pfx, blk)))
            # HC state between the two sublayers: first hc_post call of the block
            self._wrap_hc_post(blk, pfx + "hc_mid")

    def _wrap_hc_post(self, blk, key):
        orig = blk.hc_post
        state = {"n": 0}

        def hc_post(*a, **k):
            y = orig(*a, **k)
            if state["n"] % 2 == 0:
                self.saved[key] = self._sel(y)
            state["n"] += 1
            return y

        blk.hc_post = hc_post
        self._orig_methods.append((blk, "hc_post"))

    def _sel(self, t: torch.Tensor) -> np.ndarray:
        t = t.detach()
        if t.dim() >= 2 and t.size(0) == 1:
            t = t[0]
        return t[self.positions].float().cpu().numpy()

    def _pre(self, key):
        def hook(mod, args):
            self.saved[key] = self._sel(args[0])
        return hook

    def _post(self, key):
        def hook(mod, args, out):
            o = out[0] if isinstance(out, tuple) else out
            self.saved[key] = self._sel(o)
        return hook

    def _ref(self, key):
        def hook(mod, args, out):
            self.refs[key] = out
        return hook

    def _gate(self, pfx):
        def hook(mod, args, out):
            w, idx = out
            self.saved[pfx + "router_weights_all"] = w.detach().float().cpu().numpy()
            self.saved[pfx + "router_ids_all"] = idx.detach().to(torch.int32).cpu().numpy()
        return hook

    def _idx(self, pfx, blk):
        def hook(mod, args, out):
            # out: [1, N, k] = selected compressed-row ids + offset (offset = N in a one-shot prefill), -1 masked
            offset = args[3] if len(args) > 3 else None
            ids = out.detach().long()[0]
            if offset is not None:
                ids = torch.where(ids >= 0, ids - int(offset), ids)
            self.saved[pfx + "indexer_topk"] = ids[self.positions].to(torch.int32).cpu().numpy()
        return hook

    def _pull_scores(self):
        for m, key, store in self._captured:
            if m._dsv4_scores is not None:
                store[key] = m._dsv4_scores

    def finalize(self) -> Dict[str, np.ndarray]:
        """Call after the prefill forward: collects cache contents, references and margins."""
        self._pull_scores()
        model = self.model
        out = dict(self.saved)
        H = None
        for L in self.layers:
            pfx = f"L{L}_"
            blk = model.layers[L]
            attn = blk.attn
            if pfx + "q" in self.refs:
                q = self.refs[pfx + "q"].detach()[0]          # [N, H*hd] (storage now holds normed + roped q)
                H = attn.n_local_heads
                out[pfx + "q"] = q.view(q.size(0), H, -1)[self.positions].float().cpu().numpy()
            if pfx + "kv_raw" in self.refs:
                out[pfx + "kv_raw"] = self._sel(self.refs[pfx + "kv_raw"])
            r = attn.compress_ratio
            if r:
                win = attn.window_size
                n_rows = self.n // r
                out[pfx + "comp_rows"] = attn.kv_cache[0, win:win + n_rows].float().cpu().numpy()
                if attn.indexer is not None:
                    out[pfx + "indexer_rows"] = attn.indexer.kv_cache[0, :n_rows].float().cpu().numpy()
                    if L in self.index_scores:
                        sc = self.index_scores[L][0]
                        out[pfx + "indexer_scores"] = sc[self.positions].float().cpu().numpy()
            for k in ("router_weights_all", "router_ids_all"):
                if pfx + k in out:
                    arr = out.pop(pfx + k)
                    out[pfx + k.replace("_all", "")] = arr
        return out

    def margins(self):
        """Returns (expert margins [N, n_bias_layers], layer ids, indexer margins [N, n_r4_layers], layer ids,
        mtp expert margins [N] or None)."""
        self._pull_scores()
        n = self.n
        model = self.model
        k_exp = model.layers[0].ffn.gate.topk
        e_layers = [i for i, b in enumerate(model.layers) if not b.ffn.gate.hash]
        em = np.full((n, len(e_layers)), np.inf, dtype=np.float32)
        for j, L in enumerate(e_layers):
            s = self.gate_scores.get(f"L{L}")
            if s is None:
                continue
            v = torch.sort(s.float(), dim=-1, descending=True).values
            if v.size(-1) > k_exp:
                em[:, j] = (v[:, k_exp - 1] - v[:, k_exp]).cpu().numpy()
        i_layers = [i for i, b in enumerate(model.layers)
                    if b.attn.compress_ratio == 4 and b.attn.indexer is not None]
        im = np.full((n, len(i_layers)), np.inf, dtype=np.float32)
        for j, L in enumerate(i_layers):
            s = self.index_scores.get(L)
            if s is None:
                continue
            s = s[0].float()                                   # [N, T], invisible rows = -inf
            topk = model.layers[L].attn.indexer.index_topk
            visible = torch.isfinite(s).sum(-1)                # = floor((p+1)/4)
            if s.size(-1) > topk:
                v = torch.sort(s, dim=-1, descending=True).values
                mg = v[:, topk - 1] - v[:, topk]
                mg = torch.where(visible > topk, mg, torch.full_like(mg, float("inf")))
                im[:, j] = mg.cpu().numpy()
        mm = None
        if len(model.mtp) and "mtp0" in self.gate_scores:
            v = torch.sort(self.gate_scores["mtp0"].float(), dim=-1, descending=True).values
            mm = (v[:, k_exp - 1] - v[:, k_exp]).cpu().numpy().astype(np.float32)
        return em, e_layers, im, i_layers, mm

    def remove(self):
        for h in self.handles:
            h.remove()
        for m, _, _ in self._captured:
            m._dsv4_capture = False
            m._dsv4_scores = None
        self._captured = []
        for obj, attr in self._orig_methods:
            try:
                delattr(obj, attr)  # instance attribute shadowing the class method
            except AttributeError:
                pass
        self.handles = []
        self._orig_methods = []


# ----------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------
def _ids(tokens: np.ndarray, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=device).view(1, -1)


def run_prefill(model, tokens: np.ndarray, device: str, recorder: Optional[Recorder] = None,
                want_hidden: bool = False):
    """One-shot prefill at start_pos 0 -> logits [N, V] float32 (and the final HC state [1,N,hc,D] if asked)."""
    reset_state(model)
    captured = {}
    h = None
    if want_hidden:
        h = model.layers[-1].register_forward_hook(lambda m, a, o: captured.__setitem__("h", o))
    try:
        logits = model(_ids(tokens, device), 0)
    finally:
        if h is not None:
            h.remove()
    out = logits[0].float().cpu().numpy()
    return (out, captured.get("h")) if want_hidden else out


def run_chunked(model, tokens: np.ndarray, device: str, first: int = CHUNK_FIRST) -> np.ndarray:
    """Prefill `first` tokens at start_pos 0, then one token per call (the only other mode the official code supports)."""
    reset_state(model)
    n = len(tokens)
    first = min(first, n)
    ids = _ids(tokens, device)
    outs = [model(ids[:, :first], 0)[0].float().cpu()]
    for p in range(first, n):
        outs.append(model(ids[:, p:p + 1], p)[0].float().cpu())
    return torch.cat(outs, 0).numpy()


def mtp_input_ids(tokens: np.ndarray) -> np.ndarray:
    """input_ids of the MTP golden: token p+1 at position p; the last position uses token 0."""
    t = np.asarray(tokens, dtype=np.int64)
    return np.concatenate([t[1:], np.zeros(1, dtype=np.int64)])


def run_mtp(model, h_final: torch.Tensor, tokens: np.ndarray, device: str) -> np.ndarray:
    """MTPBlock on the main model's final HC state (all positions, before the head), start_pos 0."""
    mtp = model.mtp[0]
    for m in mtp.modules():
        if isinstance(m, _OFFICIAL.Compressor):
            m.kv_state.zero_()
            m.score_state.fill_(float("-inf"))
    if isinstance(getattr(mtp.attn, "kv_cache", None), torch.Tensor):
        mtp.attn.kv_cache.zero_()
    logits = mtp(h_final, 0, _ids(mtp_input_ids(tokens), device))
    return logits[0].float().cpu().numpy()


# ----------------------------------------------------------------------------------------------
def splitmix_tokens(seed: int, n: int, vocab: int) -> np.ndarray:
    """Deterministic token ids: splitmix64 stream from `seed`, token_i = z_i mod vocab (int32)."""
    mask = (1 << 64) - 1
    s = seed & mask
    out = np.empty(n, dtype=np.int32)
    for i in range(n):
        s = (s + 0x9E3779B97F4A7C15) & mask
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z = z ^ (z >> 31)
        out[i] = z % vocab
    return out


def load_tokens(path: str) -> np.ndarray:
    if path.endswith(".npy"):
        return np.load(path).astype(np.int32).reshape(-1)
    txt = Path(path).read_text().replace(",", " ").split()
    return np.array([int(x) for x in txt], dtype=np.int32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--mtp")
    ap.add_argument("--gguf-py")
    ap.add_argument("--official-dir")
    ap.add_argument("--tokens-file")
    ap.add_argument("--tokens-seed", type=int, default=1)
    ap.add_argument("--n-tokens", type=int, default=300)
    ap.add_argument("--qat", choices=["on", "off"], default="off")
    ap.add_argument("--chunked", action="store_true", help="37-token prefill + one token per call")
    ap.add_argument("--tie-break", choices=["stable", "native"], default="stable",
                    help="top-k rule for exact ties in router/indexer (stable: lower index first)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    mod = import_official(a.official_dir)
    main_g = load_gguf.GGUFFile(a.model, a.gguf_py)
    mtp_g = load_gguf.GGUFFile(a.mtp, a.gguf_py) if a.mtp else None
    hp = load_gguf.hparams(main_g)
    tokens = load_tokens(a.tokens_file) if a.tokens_file else splitmix_tokens(a.tokens_seed, a.n_tokens, hp["vocab_size"])
    sd, unm = load_gguf.official_state_dict(main_g, mtp_g, hp)
    model = build_official(mod, load_gguf.official_model_args(hp, len(tokens), mtp_g is not None), sd, unm, a.device,
                           a.tie_break)
    kernel_standin.set_qat(a.qat == "on")
    t0 = time.time()
    logits = run_chunked(model, tokens, a.device) if a.chunked else run_prefill(model, tokens, a.device)
    name = f"logits_official{'_chunked' if a.chunked else ''}_qat_{a.qat}.npy"
    np.save(os.path.join(a.out, "tokens.npy"), tokens.astype(np.int32))
    np.save(os.path.join(a.out, name), logits.astype(np.float32))
    print(f"wrote {name} {logits.shape} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
