#include "model/cpu_forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/lowp.h"
#include "model/ops.h"
#include "model/state_extent.h"
#include "quant/quant.h"

namespace dsv4 {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> to_f32(const TensorRef& t) {
  if (!t.present()) return {};
  int64_t n = t.ne[0] * t.ne[1] * t.ne[2];
  std::vector<float> v((size_t)n);
  quant::dequantize_row(t.type, t.data, v.data(), n);
  return v;
}

// Y[nb][rows] = W · X[nb][cols] for a 2-D weight (or one matrix of a stacked tensor).
void mm(const TensorRef& w, const float* x, int64_t nb, float* y) {
  quant::matmul(w.type, w.data, w.rows(), w.cols(), x, nb, y);
}
void mm_expert(const TensorRef& w, int64_t e, const float* x, int64_t nb, float* y) {
  quant::matmul(w.type, w.matrix(e), w.ne[1], w.ne[0], x, nb, y);
}

// Fixed-order (hence reproducible) vectorised f32 dot product.
inline float dot_f32(const float* a, const float* b, int64_t n) {
  return quant::dot_row(GgmlType::F32, a, b, n);
}

// Top-k of `score` (descending; ties go to the lower index). Returns the gap between the k-th and
// the (k+1)-th value (+inf when there is no (k+1)-th).
float top_k(const float* score, int64_t n, int64_t k, std::vector<int32_t>& idx) {
  idx.resize((size_t)n);
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  };
  if (k < n) {
    std::partial_sort(idx.begin(), idx.begin() + k + 1, idx.end(), better);
    const float gap = score[idx[(size_t)k - 1]] - score[idx[(size_t)k]];
    idx.resize((size_t)k);
    return gap;
  }
  std::sort(idx.begin(), idx.end(), better);
  return kInf;
}

}  // namespace

struct CpuModel::LayerConsts {
  std::vector<float> hc_attn_base, hc_attn_scale, hc_ffn_base, hc_ffn_scale;
  std::vector<float> attn_norm, ffn_norm, q_a_norm, kv_norm, sinks;
  std::vector<float> comp_ape, comp_norm, idx_ape, idx_norm, probs_bias;
  const std::vector<float>* rope = nullptr;  // the layer's RoPE variant
};

CpuModel::~CpuModel() = default;

CpuModel::CpuModel(const Model& model, CpuOptions opt) : m_(model), cfg_(model.cfg), opt_(opt) {
  rope_plain_ = ops::rope_freqs(cfg_.rope_dim, cfg_.rope_base, false, cfg_);
  rope_yarn_ = ops::rope_freqs(cfg_.rope_dim, cfg_.compress_rope_base, true, cfg_);
  auto make = [&](const LayerWeights& L) {
    LayerConsts k;
    k.hc_attn_base = to_f32(L.hc_attn_base);
    k.hc_attn_scale = to_f32(L.hc_attn_scale);
    k.hc_ffn_base = to_f32(L.hc_ffn_base);
    k.hc_ffn_scale = to_f32(L.hc_ffn_scale);
    k.attn_norm = to_f32(L.attn_norm);
    k.ffn_norm = to_f32(L.ffn_norm);
    k.q_a_norm = to_f32(L.q_a_norm);
    k.kv_norm = to_f32(L.kv_norm);
    k.sinks = to_f32(L.sinks);
    k.comp_ape = to_f32(L.comp_ape);
    k.comp_norm = to_f32(L.comp_norm);
    k.idx_ape = to_f32(L.idx_ape);
    k.idx_norm = to_f32(L.idx_norm);
    k.probs_bias = to_f32(L.exp_probs_b);
    k.rope = L.ratio ? &rope_yarn_ : &rope_plain_;
    return k;
  };
  for (const auto& L : m_.w.layers) consts_.push_back(make(L));
  out_norm_ = to_f32(m_.w.output_norm);
  out_hc_base_ = to_f32(m_.w.output_hc_base);
  out_hc_scale_ = to_f32(m_.w.output_hc_scale).at(0);
  if (m_.w.mtp) {
    const MtpWeights& t = *m_.w.mtp;
    mtp_consts_.push_back(make(t.block));
    mtp_enorm_ = to_f32(t.enorm);
    mtp_hnorm_ = to_f32(t.hnorm);
    mtp_norm_ = to_f32(t.norm);
    mtp_hc_base_ = to_f32(t.hc_head_base);
    mtp_hc_scale_ = to_f32(t.hc_head_scale).at(0);
  }
}

// Sizes from layer_state_extent, the one definition the session loader checks against.
static void init_layer_state(const ModelConfig& c, uint32_t ratio, LayerState& s) {
  const LayerStateExtent e = layer_state_extent(c, ratio, 0);
  s.raw.assign(e.raw, 0.0f);
  s.comp.clear();
  s.idx.clear();
  s.ckv.assign(e.ckv, 0.0f);
  s.cscore.assign(e.cscore, kNegInf);  // a slot not yet written gets no softmax weight
  s.ikv.assign(e.ikv, 0.0f);
  s.iscore.assign(e.iscore, kNegInf);
}

CpuSession empty_cpu_session(const ModelConfig& c) {
  CpuSession s;
  s.layers.resize(c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l) init_layer_state(c, c.ratio(l), s.layers[l]);
  init_layer_state(c, 0, s.mtp);
  return s;
}

CpuSession CpuModel::new_session() const {
  return empty_cpu_session(cfg_);
}

namespace {

// HCPre (spec/ARCH.md §4.1) for n tokens: X [n][hc*D] -> a [n][D], post [n][hc], comb [n][hc*hc].
void hc_pre(const ModelConfig& c, const TensorRef& fn, const std::vector<float>& base,
            const std::vector<float>& scale, const float* X, int64_t n, float* a, float* post,
            float* comb) {
  const int hc = (int)c.hc_mult;
  const int64_t D = c.n_embd, HD = c.hc_dim(), mix = c.hc_mix();
  std::vector<float> mixes((size_t)(n * mix));
  mm(fn, X, n, mixes.data());
  for (int64_t i = 0; i < n; ++i) {
    const float* x = X + i * HD;
    float ss = 0.0f;
    for (int64_t d = 0; d < HD; ++d) ss += x[d] * x[d];
    const float r = 1.0f / std::sqrt(ss / (float)HD + c.rms_eps);
    float* m = mixes.data() + i * mix;
    for (int64_t j = 0; j < mix; ++j) m[j] *= r;
    float pre[16];
    for (int s = 0; s < hc; ++s) {
      pre[s] = ops::sigmoid(m[s] * scale[0] + base[s]) + c.hc_eps;
      post[i * hc + s] = 2.0f * ops::sigmoid(m[hc + s] * scale[1] + base[hc + s]);
    }
    float* cm = comb + i * hc * hc;
    for (int j = 0; j < hc * hc; ++j) cm[j] = m[2 * hc + j] * scale[2] + base[2 * hc + j];
    ops::sinkhorn(cm, hc, (int)c.hc_sinkhorn_iters, c.hc_eps);
    float* ai = a + i * D;
    for (int64_t d = 0; d < D; ++d) {
      float acc = 0.0f;
      for (int s = 0; s < hc; ++s) acc += pre[s] * x[s * D + d];
      ai[d] = acc;
    }
  }
}

// HCPost (§4.3): Y_k = post_k * f + sum_j comb[j][k] * X_j, written over X.
void hc_post(const ModelConfig& c, const float* f, const float* post, const float* comb, int64_t n,
             float* X) {
  const int hc = (int)c.hc_mult;
  const int64_t D = c.n_embd, HD = c.hc_dim();
  std::vector<float> y((size_t)HD);
  for (int64_t i = 0; i < n; ++i) {
    float* x = X + i * HD;
    const float* cm = comb + i * hc * hc;
    for (int k = 0; k < hc; ++k) {
      for (int64_t d = 0; d < D; ++d) {
        float acc = 0.0f;
        for (int j = 0; j < hc; ++j) acc += cm[j * hc + k] * x[j * D + d];
        y[k * D + d] = post[i * hc + k] * f[i * D + d] + acc;
      }
    }
    std::memcpy(x, y.data(), sizeof(float) * HD);
  }
}

// One step of a compressor frontier (§5.4). `kv`/`score` hold this token's projections (score
// already has ape added). Returns true and fills `row` (head width) when a window closes.
bool compressor_step(uint32_t ratio, int64_t width, int64_t pos, const float* kv,
                     const float* score, std::vector<float>& skv, std::vector<float>& ssc,
                     float* row) {
  const int64_t j = pos % ratio;
  const bool overlap = ratio == 4;
  const int64_t lanes = overlap ? 2 : 1;
  const int64_t slot_w = lanes * width;
  const int64_t slot = overlap ? ratio + j : j;
  std::memcpy(&skv[(size_t)(slot * slot_w)], kv, sizeof(float) * slot_w);
  std::memcpy(&ssc[(size_t)(slot * slot_w)], score, sizeof(float) * slot_w);
  if (j != ratio - 1) return false;
  // Candidates: overlap -> lane A of slots 0..r-1 (previous window), lane B of slots r..2r-1.
  const int64_t n_cand = overlap ? 2 * ratio : ratio;
  for (int64_t d = 0; d < width; ++d) {
    float mx = kNegInf;
    for (int64_t c = 0; c < n_cand; ++c) {
      const int64_t off = c * slot_w + (overlap && c >= (int64_t)ratio ? width : 0) + d;
      mx = std::max(mx, ssc[(size_t)off]);
    }
    float den = 0.0f, num = 0.0f;
    for (int64_t c = 0; c < n_cand; ++c) {
      const int64_t off = c * slot_w + (overlap && c >= (int64_t)ratio ? width : 0) + d;
      const float e = std::exp(ssc[(size_t)off] - mx);
      den += e;
      num += e * skv[(size_t)off];
    }
    row[d] = num / den;
  }
  if (overlap) {
    std::copy(skv.begin() + ratio * slot_w, skv.begin() + 2 * ratio * slot_w, skv.begin());
    std::copy(ssc.begin() + ratio * slot_w, ssc.begin() + 2 * ratio * slot_w, ssc.begin());
  }
  return true;
}

}  // namespace

void CpuModel::attention(const LayerWeights& L, const LayerConsts& K, LayerState& st, int64_t p0,
                         int64_t n, const float* x, float* out, float* margin, int li,
                         const TraceFn& trace) const {
  const ModelConfig& c = cfg_;
  const int64_t H = c.n_head, hd = c.head_dim, rd = c.rope_dim, nope = hd - rd;
  const int64_t QL = c.q_lora_rank, W = c.window;
  const uint32_t ratio = L.ratio;
  const std::vector<float>& rope = *K.rope;

  // Query path (§5.1).
  std::vector<float> qa((size_t)(n * QL)), qr((size_t)(n * QL)), q((size_t)(n * H * hd));
  mm(L.q_a, x, n, qa.data());
  for (int64_t i = 0; i < n; ++i)
    ops::rms_norm(&qa[i * QL], K.q_a_norm.data(), c.rms_eps, QL, &qr[i * QL]);
  mm(L.q_b, qr.data(), n, q.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < H; ++h) {
      float* qh = &q[(i * H + h) * hd];
      ops::rms_norm(qh, nullptr, c.rms_eps, hd, qh);
      ops::rope_apply(qh + nope, rope, p0 + i, false);
    }
  // Raw KV path (§5.2).
  std::vector<float> kv((size_t)(n * hd)), kvn((size_t)(n * hd));
  mm(L.kv, x, n, kv.data());
  for (int64_t i = 0; i < n; ++i) {
    float* r = &kvn[i * hd];
    ops::rms_norm(&kv[i * hd], K.kv_norm.data(), c.rms_eps, hd, r);
    ops::rope_apply(r + nope, rope, p0 + i, false);
    if (opt_.qat)
      for (int64_t b = 0; b < nope; b += 64) fp8_sim_block(r + b, 64);
  }

  // Compressors (§5.4) and the indexer's compressor (§5.5): emitted rows become visible to the
  // token that closes their window.
  if (ratio > 0) {
    const int64_t lanes = ModelConfig::compressor_lanes(ratio), cw = lanes * hd;
    std::vector<float> ckv((size_t)(n * cw)), csc((size_t)(n * cw)), row((size_t)hd);
    mm(L.comp_kv, x, n, ckv.data());
    mm(L.comp_gate, x, n, csc.data());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = p0 + i;
      const float* ape = &K.comp_ape[(size_t)((p % ratio) * cw)];
      for (int64_t d = 0; d < cw; ++d) csc[i * cw + d] += ape[d];
      if (compressor_step(ratio, hd, p, &ckv[i * cw], &csc[i * cw], st.ckv, st.cscore,
                          row.data())) {
        std::vector<float> r((size_t)hd);
        ops::rms_norm(row.data(), K.comp_norm.data(), c.rms_eps, hd, r.data());
        ops::rope_apply(r.data() + nope, rope, p + 1 - ratio, false);
        if (opt_.qat)
          for (int64_t b = 0; b < nope; b += 64) fp8_sim_block(r.data() + b, 64);
        if (trace) trace(li, "comp_row", p, r.data(), hd);
        st.comp.insert(st.comp.end(), r.begin(), r.end());
      }
    }
  }
  const int64_t IH = c.idx_n_head, ID = c.idx_head_dim;
  std::vector<float> iq, iw;
  if (ratio == 4) {
    const int64_t cw = 2 * ID;
    std::vector<float> ikv((size_t)(n * cw)), isc((size_t)(n * cw)), row((size_t)ID);
    mm(L.idx_kv, x, n, ikv.data());
    mm(L.idx_gate, x, n, isc.data());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = p0 + i;
      const float* ape = &K.idx_ape[(size_t)((p % 4) * cw)];
      for (int64_t d = 0; d < cw; ++d) isc[i * cw + d] += ape[d];
      if (compressor_step(4, ID, p, &ikv[i * cw], &isc[i * cw], st.ikv, st.iscore, row.data())) {
        std::vector<float> r((size_t)ID);
        ops::rms_norm(row.data(), K.idx_norm.data(), c.rms_eps, ID, r.data());
        ops::rope_apply(r.data() + (ID - rd), rope, p + 1 - 4, false);
        ops::hadamard(r.data(), ID);
        if (opt_.qat)
          for (int64_t b = 0; b < ID; b += 32) fp4_sim_block(r.data() + b, 32);
        if (trace) trace(li, "idx_row", p, r.data(), ID);
        st.idx.insert(st.idx.end(), r.begin(), r.end());
      }
    }
    iq.resize((size_t)(n * IH * ID));
    iw.resize((size_t)(n * IH));
    mm(L.idx_q_b, qr.data(), n, iq.data());
    mm(L.idx_proj, x, n, iw.data());
    const float wscale = (float)(std::pow((double)ID, -0.5) * std::pow((double)IH, -0.5));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < IH; ++h) {
        float* v = &iq[(i * IH + h) * ID];
        ops::rope_apply(v + (ID - rd), rope, p0 + i, false);
        ops::hadamard(v, ID);
        if (opt_.qat)
          for (int64_t b = 0; b < ID; b += 32) fp4_sim_block(v + b, 32);
      }
      for (int64_t h = 0; h < IH; ++h) iw[i * IH + h] *= wscale;
    }
  }

  // Sparse attention with sinks (§5.6), per query and head.
  const float scale = 1.0f / std::sqrt((float)hd);
  std::vector<float> o((size_t)(n * H * hd));
  std::vector<std::vector<int32_t>> selected((size_t)n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = p0 + i;
    if (ratio == 0) continue;
    const int64_t visible = (p + 1) / ratio;
    auto& sel = selected[(size_t)i];
    if (ratio == 4 && visible > (int64_t)c.idx_topk) {
      std::vector<float> sc((size_t)visible);
      for (int64_t r = 0; r < visible; ++r) {
        const float* k = &st.idx[(size_t)(r * ID)];
        float s = 0.0f;
        for (int64_t h = 0; h < IH; ++h) {
          const float dot = dot_f32(&iq[(i * IH + h) * ID], k, ID);
          s += std::max(dot, 0.0f) * iw[i * IH + h];
        }
        sc[(size_t)r] = s;
      }
      const float gap = top_k(sc.data(), visible, c.idx_topk, sel);
      std::sort(sel.begin(), sel.end());
      margin[i] = std::min(margin[i], gap);
      if (trace) {
        std::vector<float> f(sel.begin(), sel.end());
        trace(li, "idx_topk", p, f.data(), (int64_t)f.size());
      }
    } else {
      sel.resize((size_t)visible);
      std::iota(sel.begin(), sel.end(), 0);
    }
  }
#pragma omp parallel for schedule(dynamic) collapse(2)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t p = p0 + i;
      const float* qh = &q[(i * H + h) * hd];
      // Keys: selected compressed rows, then the raw window in position order.
      std::vector<const float*> keys;
      for (int32_t r : selected[(size_t)i]) keys.push_back(&st.comp[(size_t)r * hd]);
      for (int64_t t = std::max<int64_t>(0, p - W + 1); t <= p; ++t)
        keys.push_back(t >= p0 ? &kvn[(t - p0) * hd] : &st.raw[(size_t)((t % W) * hd)]);
      std::vector<float> s(keys.size());
      float mx = K.sinks[h];
      for (size_t j = 0; j < keys.size(); ++j) {
        s[j] = dot_f32(qh, keys[j], hd) * scale;
        mx = std::max(mx, s[j]);
      }
      float den = std::exp(K.sinks[h] - mx);
      float* oh = &o[(i * H + h) * hd];
      std::fill(oh, oh + hd, 0.0f);
      for (size_t j = 0; j < keys.size(); ++j) {
        const float e = std::exp(s[j] - mx);
        den += e;
        for (int64_t d = 0; d < hd; ++d) oh[d] += e * keys[j][d];
      }
      for (int64_t d = 0; d < hd; ++d) oh[d] /= den;
      ops::rope_apply(oh + nope, rope, p, true);  // §5.7 de-rotation
    }
  }
  // The raw ring takes this chunk's rows only after every query has read the older ones.
  for (int64_t i = std::max<int64_t>(0, n - W); i < n; ++i)
    std::memcpy(&st.raw[(size_t)(((p0 + i) % W) * hd)], &kvn[i * hd], sizeof(float) * hd);

  // Grouped output projection (§5.7).
  const int64_t G = c.o_groups, OL = c.o_lora_rank, gs = H * hd / G;
  std::vector<float> u((size_t)(n * G * OL)), gin((size_t)(n * gs)), gout((size_t)(n * OL));
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(&gin[i * gs], &o[i * H * hd + g * gs], sizeof(float) * gs);
    quant::matmul(L.o_a.type, L.o_a.data + (uint64_t)g * OL * L.o_a.row_bytes(), OL, gs, gin.data(),
                  n, gout.data());
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(&u[i * G * OL + g * OL], &gout[i * OL], sizeof(float) * OL);
  }
  mm(L.o_b, u.data(), n, out);
}

void CpuModel::moe(const LayerWeights& L, const LayerConsts& K, float clamp, const int32_t* tokens,
                   int64_t p0, int64_t n, const float* y, float* out, float* margin, int li,
                   const TraceFn& trace) const {
  const ModelConfig& c = cfg_;
  const int64_t D = c.n_embd, E = c.n_expert, k = c.n_expert_used, F = c.expert_ff;
  std::vector<float> logits((size_t)(n * E));
  mm(L.gate_inp, y, n, logits.data());
  std::vector<int32_t> ids((size_t)(n * k));
  std::vector<float> wts((size_t)(n * k));
  std::vector<int32_t> sel;
  for (int64_t i = 0; i < n; ++i) {
    float* s = &logits[i * E];
    for (int64_t e = 0; e < E; ++e) s[e] = std::sqrt(ops::softplus(s[e]));
    if (L.tid2eid.present()) {
      const int32_t* row = (const int32_t*)L.tid2eid.data + (int64_t)tokens[i] * k;
      sel.assign(row, row + k);
    } else {
      std::vector<float> biased(s, s + E);
      if (!K.probs_bias.empty())
        for (int64_t e = 0; e < E; ++e) biased[e] += K.probs_bias[e];
      margin[i] = std::min(margin[i], top_k(biased.data(), E, k, sel));
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum += s[sel[j]];
    for (int64_t j = 0; j < k; ++j) {
      ids[i * k + j] = sel[j];
      wts[i * k + j] = s[sel[j]] / sum * c.expert_weights_scale;
    }
    if (trace) {
      std::vector<float> f(sel.begin(), sel.end());
      trace(li, "router_ids", p0 + i, f.data(), k);
      trace(li, "router_w", p0 + i, &wts[i * k], k);
    }
  }
  // Routed experts, grouped by expert; contributions summed per token in ascending expert id
  // (the reference's order), then the shared expert.
  std::vector<float> contrib((size_t)(n * k * D));
  std::vector<float> xin, g, up, h, dn;
  for (int64_t e = 0; e < E; ++e) {
    std::vector<std::pair<int64_t, int64_t>> users;  // (token, slot)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j)
        if (ids[i * k + j] == e) users.push_back({i, j});
    if (users.empty()) continue;
    const int64_t m = (int64_t)users.size();
    xin.resize((size_t)(m * D));
    for (int64_t u = 0; u < m; ++u)
      std::memcpy(&xin[u * D], y + users[u].first * D, sizeof(float) * D);
    g.resize((size_t)(m * F));
    up.resize((size_t)(m * F));
    h.resize((size_t)(m * F));
    dn.resize((size_t)(m * D));
    mm_expert(L.gate_exps, e, xin.data(), m, g.data());
    mm_expert(L.up_exps, e, xin.data(), m, up.data());
    for (int64_t u = 0; u < m; ++u) {
      const float w = wts[users[u].first * k + users[u].second];
      for (int64_t f = 0; f < F; ++f) {
        const float gv = std::min(g[u * F + f], clamp);
        const float uv = std::clamp(up[u * F + f], -clamp, clamp);
        h[u * F + f] = w * (ops::silu(gv) * uv);
      }
    }
    mm_expert(L.down_exps, e, h.data(), m, dn.data());
    for (int64_t u = 0; u < m; ++u)
      std::memcpy(&contrib[(users[u].first * k + users[u].second) * D], &dn[u * D],
                  sizeof(float) * D);
  }
  std::vector<float> sg((size_t)(n * F)), su((size_t)(n * F)), sh((size_t)(n * D));
  mm(L.gate_shexp, y, n, sg.data());
  mm(L.up_shexp, y, n, su.data());
  for (int64_t t = 0; t < n * F; ++t) {
    const float gv = std::min(sg[t], clamp);
    const float uv = std::clamp(su[t], -clamp, clamp);
    sg[t] = ops::silu(gv) * uv;
  }
  mm(L.down_shexp, sg.data(), n, sh.data());
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> order((size_t)k);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return ids[i * k + a] < ids[i * k + b]; });
    float* o = out + i * D;
    std::fill(o, o + D, 0.0f);
    for (int64_t j : order)
      for (int64_t d = 0; d < D; ++d) o[d] += contrib[(i * k + j) * D + d];
    for (int64_t d = 0; d < D; ++d) o[d] += sh[i * D + d];
  }
}

void CpuModel::run_block(const LayerWeights& L, const LayerConsts& K, int li, float clamp,
                         LayerState& st, int64_t p0, const int32_t* tokens, int64_t n, float* X,
                         float* margin, const TraceFn& trace) const {
  const ModelConfig& c = cfg_;
  const int64_t D = c.n_embd, hc = c.hc_mult, HD = c.hc_dim();
  std::vector<float> a((size_t)(n * D)), xin((size_t)(n * D)), f((size_t)(n * D));
  std::vector<float> post((size_t)(n * hc)), comb((size_t)(n * hc * hc));
  if (trace)
    for (int64_t i = 0; i < n; ++i) trace(li, "hc_in", p0 + i, X + i * HD, HD);
  hc_pre(c, L.hc_attn_fn, K.hc_attn_base, K.hc_attn_scale, X, n, a.data(), post.data(),
         comb.data());
  for (int64_t i = 0; i < n; ++i)
    ops::rms_norm(&a[i * D], K.attn_norm.data(), c.rms_eps, D, &xin[i * D]);
  attention(L, K, st, p0, n, xin.data(), f.data(), margin, li, trace);
  if (trace)
    for (int64_t i = 0; i < n; ++i) trace(li, "attn_out", p0 + i, &f[i * D], D);
  hc_post(c, f.data(), post.data(), comb.data(), n, X);

  hc_pre(c, L.hc_ffn_fn, K.hc_ffn_base, K.hc_ffn_scale, X, n, a.data(), post.data(), comb.data());
  for (int64_t i = 0; i < n; ++i)
    ops::rms_norm(&a[i * D], K.ffn_norm.data(), c.rms_eps, D, &xin[i * D]);
  moe(L, K, clamp, tokens, p0, n, xin.data(), f.data(), margin, li, trace);
  if (trace)
    for (int64_t i = 0; i < n; ++i) trace(li, "moe_out", p0 + i, &f[i * D], D);
  hc_post(c, f.data(), post.data(), comb.data(), n, X);
  if (trace)
    for (int64_t i = 0; i < n; ++i) trace(li, "hc_out", p0 + i, X + i * HD, HD);
}

void CpuModel::head(const float* X, int64_t n, const TensorRef& fn, const std::vector<float>& base,
                    float scale, const std::vector<float>& norm, float* logits) const {
  const ModelConfig& c = cfg_;
  const int64_t D = c.n_embd, hc = c.hc_mult, HD = c.hc_dim();
  std::vector<float> mixes((size_t)(n * hc)), z((size_t)(n * D)), h((size_t)D);
  mm(fn, X, n, mixes.data());
  for (int64_t i = 0; i < n; ++i) {
    const float* x = X + i * HD;
    float ss = 0.0f;
    for (int64_t d = 0; d < HD; ++d) ss += x[d] * x[d];
    const float r = 1.0f / std::sqrt(ss / (float)HD + c.rms_eps);
    float w[16];
    for (int64_t s = 0; s < hc; ++s)
      w[s] = ops::sigmoid(mixes[i * hc + s] * r * scale + base[s]) + c.hc_eps;
    for (int64_t d = 0; d < D; ++d) {
      float acc = 0.0f;
      for (int64_t s = 0; s < hc; ++s) acc += w[s] * x[s * D + d];
      h[d] = acc;
    }
    ops::rms_norm(h.data(), norm.data(), c.rms_eps, D, &z[i * D]);
  }
  mm(m_.w.output, z.data(), n, logits);
}

void CpuModel::forward(CpuSession& sess, const int32_t* tokens, int64_t n, bool all_logits,
                       bool want_hc_final, ForwardResult& out, const TraceFn& trace) const {
  const ModelConfig& c = cfg_;
  if (n <= 0) fail("forward: empty token batch");
  const int64_t D = c.n_embd, HD = c.hc_dim(), p0 = sess.n_past;
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || (uint32_t)tokens[i] >= c.n_vocab)
      fail("token id {} at position {} is outside the vocabulary (0..{})", tokens[i], p0 + i,
           c.n_vocab - 1);
  std::vector<float> X((size_t)(n * HD));
  std::vector<float> e((size_t)D);
  const TensorRef& emb = m_.w.tok_embd;
  for (int64_t i = 0; i < n; ++i) {
    quant::dequantize_row(emb.type, emb.data + (uint64_t)tokens[i] * emb.row_bytes(), e.data(), D);
    for (uint32_t s = 0; s < c.hc_mult; ++s)
      std::memcpy(&X[i * HD + s * D], e.data(), sizeof(float) * D);
  }
  out.tie_margin.assign((size_t)n, kInf);
  for (uint32_t l = 0; l < c.n_layer; ++l)
    run_block(m_.w.layers[l], consts_[l], (int)l, c.swiglu_clamp[l], sess.layers[l], p0, tokens, n,
              X.data(), out.tie_margin.data(), trace);
  sess.n_past += n;
  if (want_hc_final) out.hc_final = X;
  const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
  out.logits.assign((size_t)(rows * c.n_vocab), 0.0f);
  head(&X[first * HD], rows, m_.w.output_hc_fn, out_hc_base_, out_hc_scale_, out_norm_,
       out.logits.data());
}

void CpuModel::mtp_forward(CpuSession& sess, const float* hc, const int32_t* tokens, int64_t n,
                           std::vector<float>& logits) const {
  if (!m_.w.mtp) fail("this model has no MTP block (give the MTP GGUF with --mtp)");
  const ModelConfig& c = cfg_;
  const MtpWeights& t = *m_.w.mtp;
  const int64_t D = c.n_embd, HD = c.hc_dim(), hc_n = c.hc_mult, p0 = sess.mtp_n_past;
  std::vector<float> X((size_t)(n * HD)), e((size_t)(n * D)), en((size_t)(n * D));
  std::vector<float> hn((size_t)(n * hc_n * D)), ep((size_t)(n * D)), hp((size_t)(n * hc_n * D));
  const TensorRef& emb = m_.w.tok_embd;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || (uint32_t)tokens[i] >= c.n_vocab)
      fail("MTP token id {} is outside the vocabulary", tokens[i]);
    quant::dequantize_row(emb.type, emb.data + (uint64_t)tokens[i] * emb.row_bytes(), &e[i * D], D);
    ops::rms_norm(&e[i * D], mtp_enorm_.data(), c.rms_eps, D, &en[i * D]);
    for (int64_t s = 0; s < hc_n; ++s)
      ops::rms_norm(hc + i * HD + s * D, mtp_hnorm_.data(), c.rms_eps, D, &hn[(i * hc_n + s) * D]);
  }
  mm(t.e_proj, en.data(), n, ep.data());
  mm(t.h_proj, hn.data(), n * hc_n, hp.data());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < hc_n; ++s)
      for (int64_t d = 0; d < D; ++d)
        X[i * HD + s * D + d] = ep[i * D + d] + hp[(i * hc_n + s) * D + d];
  std::vector<float> margin((size_t)n, kInf);
  run_block(t.block, mtp_consts_[0], (int)c.n_layer, c.swiglu_clamp.back(), sess.mtp, p0, tokens, n,
            X.data(), margin.data(), nullptr);
  sess.mtp_n_past += n;
  logits.assign((size_t)(n * c.n_vocab), 0.0f);
  head(X.data(), n, t.hc_head_fn, mtp_hc_base_, mtp_hc_scale_, mtp_norm_, logits.data());
}

}  // namespace dsv4
