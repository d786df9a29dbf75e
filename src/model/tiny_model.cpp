#include "model/tiny_model.h"

#include <cmath>
#include <cstring>
#include <functional>

#include "core/error.h"
#include "core/half.h"
#include "quant/quant.h"

namespace dsv4 {
namespace {

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  uint64_t s = seed ^ h;
  return splitmix(s);
}
double uniform(uint64_t& s) {
  return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}
double normal(uint64_t& s) {
  const double u1 = uniform(s) + 1e-300, u2 = uniform(s);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * M_PI * u2);
}

// How a tensor's random values are drawn.
enum class Init { kMatrix, kNorm, kHcFn, kHcBase, kHcScale, kSink, kApe, kBias, kEmbed, kHead };

struct TensorSpec {
  std::string name;
  std::vector<uint64_t> ne;
  GgmlType type;
  Init init;
};

float init_scale(Init init, const std::vector<uint64_t>& ne) {
  const double fan_in = (double)ne[0];
  switch (init) {
    case Init::kMatrix:
      return (float)(1.0 / std::sqrt(fan_in));
    case Init::kHcFn:
      return (float)(1.0 / std::sqrt(fan_in));
    case Init::kHead:
      return (float)(2.0 / std::sqrt(fan_in));
    default:
      return 1.0f;
  }
}

std::vector<float> draw_floats(Init init, const std::vector<uint64_t>& ne, uint64_t seed) {
  uint64_t n = 1;
  for (auto d : ne) n *= d;
  std::vector<float> v(n);
  uint64_t s = seed;
  const float sc = init_scale(init, ne);
  for (uint64_t i = 0; i < n; ++i) {
    switch (init) {
      case Init::kNorm:
        v[i] = (float)(1.0 + 0.1 * normal(s));
        break;
      case Init::kHcBase:
        v[i] = (float)(0.5 * normal(s));
        break;
      case Init::kHcScale:
        v[i] = (float)(0.3 + 0.7 * uniform(s));
        break;
      case Init::kSink:
        v[i] = (float)normal(s);
        break;
      case Init::kApe:
        v[i] = (float)(0.5 * normal(s));
        break;
      case Init::kBias:
        v[i] = (float)(0.1 * normal(s));
        break;
      case Init::kEmbed:
        v[i] = (float)normal(s);
        break;
      default:
        v[i] = (float)(sc * normal(s));
        break;
    }
  }
  return v;
}

std::vector<uint8_t> encode_floats(const std::vector<float>& v, GgmlType t) {
  std::vector<uint8_t> out;
  if (t == GgmlType::F32) {
    out.resize(v.size() * 4);
    std::memcpy(out.data(), v.data(), out.size());
  } else if (t == GgmlType::F16 || t == GgmlType::BF16) {
    out.resize(v.size() * 2);
    for (size_t i = 0; i < v.size(); ++i) {
      uint16_t h = t == GgmlType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
      std::memcpy(&out[i * 2], &h, 2);
    }
  } else {
    fail("encode_floats: type {} is not a plain float type", ggml_type_name(t));
  }
  return out;
}

// Tensor data for one spec: random valid blocks for quantized types, drawn floats otherwise.
std::vector<uint8_t> make_data(const TensorSpec& t, uint64_t seed, bool as_f32) {
  uint64_t n = 1;
  for (auto d : t.ne) n *= d;
  const bool plain = t.type == GgmlType::F32 || t.type == GgmlType::F16 || t.type == GgmlType::BF16;
  if (plain) {
    std::vector<float> v = draw_floats(t.init, t.ne, seed);
    if (t.type != GgmlType::F32) {  // values exactly representable in the stored type
      std::vector<uint8_t> enc = encode_floats(v, t.type);
      quant::dequantize_row(t.type, enc.data(), v.data(), (int64_t)n);
      if (!as_f32) return enc;
    }
    return encode_floats(v, GgmlType::F32);
  }
  std::vector<uint8_t> blocks(ggml_row_bytes(t.type, t.ne[0]) * (n / t.ne[0]));
  quant::random_blocks(t.type, seed, init_scale(t.init, t.ne), blocks.data(), (int64_t)n);
  if (!as_f32) return blocks;
  std::vector<float> v(n);
  quant::dequantize_row(t.type, blocks.data(), v.data(), (int64_t)n);
  return encode_floats(v, GgmlType::F32);
}

// Every tensor of the main model (and, separately, of the MTP file), in the published order.
void list_block(const TinySpec& s, const std::string& p, uint32_t ratio, bool hash, bool bias,
                std::vector<TensorSpec>& out) {
  const uint64_t D = s.n_embd, hd = s.head_dim, H = s.n_head, hc = s.hc_mult;
  const uint64_t mix = (2 + hc) * hc, E = s.n_expert, F = s.expert_ff;
  const GgmlType f16 = s.f16_type, q = s.attn_type;
  auto add = [&](std::string n, std::vector<uint64_t> ne, GgmlType t, Init i) {
    out.push_back({p + n, std::move(ne), t, i});
  };
  add("hc_attn_fn.weight", {hc * D, mix}, f16, Init::kHcFn);
  add("hc_attn_base.weight", {mix}, GgmlType::F32, Init::kHcBase);
  add("hc_attn_scale.weight", {3}, GgmlType::F32, Init::kHcScale);
  add("hc_ffn_fn.weight", {hc * D, mix}, f16, Init::kHcFn);
  add("hc_ffn_base.weight", {mix}, GgmlType::F32, Init::kHcBase);
  add("hc_ffn_scale.weight", {3}, GgmlType::F32, Init::kHcScale);
  add("attn_norm.weight", {D}, GgmlType::F32, Init::kNorm);
  add("ffn_norm.weight", {D}, GgmlType::F32, Init::kNorm);
  add("attn_q_a.weight", {D, s.q_lora_rank}, q, Init::kMatrix);
  add("attn_q_a_norm.weight", {s.q_lora_rank}, GgmlType::F32, Init::kNorm);
  add("attn_q_b.weight", {s.q_lora_rank, H * hd}, q, Init::kMatrix);
  add("attn_kv.weight", {D, hd}, q, Init::kMatrix);
  add("attn_kv_a_norm.weight", {hd}, GgmlType::F32, Init::kNorm);
  add("attn_sinks.weight", {H}, GgmlType::F32, Init::kSink);
  add("attn_output_a.weight", {H * hd / s.o_groups, (uint64_t)s.o_groups * s.o_lora_rank}, q,
      Init::kMatrix);
  add("attn_output_b.weight", {(uint64_t)s.o_groups * s.o_lora_rank, D}, q, Init::kMatrix);
  if (ratio > 0) {
    const uint64_t lanes = ratio == 4 ? 2 : 1;
    add("attn_compressor_ape.weight", {lanes * hd, ratio}, f16, Init::kApe);
    add("attn_compressor_kv.weight", {D, lanes * hd}, f16, Init::kMatrix);
    add("attn_compressor_gate.weight", {D, lanes * hd}, f16, Init::kMatrix);
    add("attn_compressor_norm.weight", {hd}, GgmlType::F32, Init::kNorm);
  }
  if (ratio == 4) {
    const uint64_t id = s.idx_head_dim;
    add("indexer.attn_q_b.weight", {s.q_lora_rank, s.idx_n_head * id}, f16, Init::kMatrix);
    add("indexer.proj.weight", {D, s.idx_n_head}, f16, Init::kMatrix);
    add("indexer_compressor_ape.weight", {2 * id, 4}, f16, Init::kApe);
    add("indexer_compressor_kv.weight", {D, 2 * id}, f16, Init::kMatrix);
    add("indexer_compressor_gate.weight", {D, 2 * id}, f16, Init::kMatrix);
    add("indexer_compressor_norm.weight", {id}, GgmlType::F32, Init::kNorm);
  }
  add("ffn_gate_inp.weight", {D, E}, f16, Init::kMatrix);
  if (bias) add("exp_probs_b.bias", {E}, GgmlType::F32, Init::kBias);
  if (hash) add("ffn_gate_tid2eid.weight", {s.n_expert_used, 0}, GgmlType::I32, Init::kMatrix);
  add("ffn_gate_exps.weight", {D, F, E}, s.expert_gate_type, Init::kMatrix);
  add("ffn_up_exps.weight", {D, F, E}, s.expert_gate_type, Init::kMatrix);
  add("ffn_down_exps.weight", {F, D, E}, s.expert_down_type, Init::kMatrix);
  add("ffn_gate_shexp.weight", {D, F}, q, Init::kMatrix);
  add("ffn_up_shexp.weight", {D, F}, q, Init::kMatrix);
  add("ffn_down_shexp.weight", {F, D}, q, Init::kMatrix);
}

uint32_t vocab_size(const TinySpec& s, const gguf::File* tok) {
  if (tok) return (uint32_t)tok->get_string_array("tokenizer.ggml.tokens").size();
  return s.vocab ? s.vocab : 264;
}

std::vector<TensorSpec> list_main(const TinySpec& s, uint32_t V) {
  std::vector<TensorSpec> out;
  const uint64_t D = s.n_embd, hc = s.hc_mult;
  out.push_back({"token_embd.weight", {D, V}, s.f16_type, Init::kEmbed});
  for (uint32_t l = 0; l < s.ratios.size(); ++l) {
    const bool hash = l < s.n_hash_layers;
    list_block(s, "blk." + std::to_string(l) + ".", s.ratios[l], hash, !hash, out);
    for (auto& t : out)
      if (t.ne.size() == 2 && t.ne[1] == 0) t.ne[1] = V;  // tid2eid rows = vocab
  }
  out.push_back({"output_hc_fn.weight", {hc * D, hc}, s.f16_type, Init::kHcFn});
  out.push_back({"output_hc_base.weight", {hc}, GgmlType::F32, Init::kHcBase});
  out.push_back({"output_hc_scale.weight", {1}, GgmlType::F32, Init::kHcScale});
  out.push_back({"output_norm.weight", {D}, GgmlType::F32, Init::kNorm});
  out.push_back({"output.weight", {D, V}, s.attn_type, Init::kHead});
  return out;
}

std::vector<TensorSpec> list_mtp(const TinySpec& s) {
  std::vector<TensorSpec> out;
  const uint64_t D = s.n_embd, hc = s.hc_mult;
  const std::string p = "mtp.0.";
  out.push_back({p + "e_proj.weight", {D, D}, s.attn_type, Init::kMatrix});
  out.push_back({p + "h_proj.weight", {D, D}, s.attn_type, Init::kMatrix});
  out.push_back({p + "enorm.weight", {D}, GgmlType::F32, Init::kNorm});
  out.push_back({p + "hnorm.weight", {D}, GgmlType::F32, Init::kNorm});
  out.push_back({p + "norm.weight", {D}, GgmlType::F32, Init::kNorm});
  out.push_back({p + "hc_head_fn.weight", {hc * D, hc}, s.f16_type, Init::kHcFn});
  out.push_back({p + "hc_head_base.weight", {hc}, GgmlType::F32, Init::kHcBase});
  out.push_back({p + "hc_head_scale.weight", {1}, GgmlType::F32, Init::kHcScale});
  list_block(s, p, 0, false, true, out);
  return out;
}

void set_metadata(const TinySpec& s, uint32_t V, gguf::Writer& w) {
  using gguf::Value;
  const uint32_t L = (uint32_t)s.ratios.size();
  const std::string a = "deepseek4.";
  w.set("general.architecture", Value::str("deepseek4"));
  w.set("general.name", Value::str(s.name));
  w.set(a + "block_count", Value::u32(L));
  w.set(a + "context_length", Value::u32(1048576));
  w.set(a + "embedding_length", Value::u32(s.n_embd));
  w.set(a + "vocab_size", Value::u32(V));
  w.set(a + "attention.head_count", Value::u32(s.n_head));
  w.set(a + "attention.head_count_kv", Value::u32(1));
  w.set(a + "attention.key_length", Value::u32(s.head_dim));
  w.set(a + "attention.value_length", Value::u32(s.head_dim));
  w.set(a + "rope.dimension_count", Value::u32(s.rope_dim));
  w.set(a + "attention.q_lora_rank", Value::u32(s.q_lora_rank));
  w.set(a + "attention.output_lora_rank", Value::u32(s.o_lora_rank));
  w.set(a + "attention.output_group_count", Value::u32(s.o_groups));
  w.set(a + "expert_count", Value::u32(s.n_expert));
  w.set(a + "expert_used_count", Value::u32(s.n_expert_used));
  w.set(a + "expert_feed_forward_length", Value::u32(s.expert_ff));
  w.set(a + "expert_shared_count", Value::u32(1));
  w.set(a + "hash_layer_count", Value::u32(s.n_hash_layers));
  w.set(a + "expert_gating_func", Value::u32(4));
  w.set(a + "attention.sliding_window", Value::u32(s.window));
  w.set(a + "attention.indexer.head_count", Value::u32(s.idx_n_head));
  w.set(a + "attention.indexer.key_length", Value::u32(s.idx_head_dim));
  w.set(a + "attention.indexer.top_k", Value::u32(s.idx_topk));
  w.set(a + "hyper_connection.count", Value::u32(s.hc_mult));
  w.set(a + "hyper_connection.sinkhorn_iterations", Value::u32(s.hc_sinkhorn_iters));
  std::vector<uint32_t> ratios(s.ratios);
  ratios.push_back(0);  // the MTP block
  w.set(a + "attention.compress_ratios", Value::array_u32(ratios));
  // llama.cpp requires exactly block_count entries here (compress_ratios may be longer).
  w.set(a + "swiglu_clamp_exp", Value::array_f32(std::vector<float>(L, 10.0f)));
  w.set(a + "rope.scaling.type", Value::str("yarn"));  // llama.cpp: YaRN is off without it
  w.set(a + "rope.scaling.original_context_length", Value::u32(65536));
  w.set(a + "rope.freq_base", Value::f32(10000.0f));
  w.set(a + "rope.scaling.factor", Value::f32(16.0f));
  w.set(a + "rope.scaling.yarn_beta_fast", Value::f32(32.0f));
  w.set(a + "rope.scaling.yarn_beta_slow", Value::f32(1.0f));
  w.set(a + "attention.compress_rope_freq_base", Value::f32(160000.0f));
  w.set(a + "expert_weights_scale", Value::f32(1.5f));
  w.set(a + "attention.layer_norm_rms_epsilon", Value::f32(1e-6f));
  w.set(a + "hyper_connection.epsilon", Value::f32(1e-6f));
  w.set(a + "expert_weights_norm", Value::boolean(true));
}

// GPT-2 byte-to-unicode table (the byte-level BPE convention of tokenizer.ggml.tokens).
std::string byte_token(int b) {
  int cp = b;
  const bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (!direct) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      const bool d = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
      if (!d) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += (char)cp;
  } else {
    s += (char)(0xc0 | (cp >> 6));
    s += (char)(0x80 | (cp & 0x3f));
  }
  return s;
}

void set_byte_vocab(uint32_t V, gguf::Writer& w) {
  using gguf::Value;
  static const char* specials[] = {"<｜begin▁of▁sentence｜>",
                                   "<｜end▁of▁sentence｜>",
                                   "<｜User｜>",
                                   "<｜Assistant｜>",
                                   "<think>",
                                   "</think>",
                                   "｜DSML｜",
                                   "<｜latest_reminder｜>"};
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(byte_token(b));
    types.push_back(1);
  }
  for (const char* sp : specials) {
    tokens.push_back(sp);
    types.push_back(3);
  }
  while (tokens.size() < V) {
    tokens.push_back("<｜place▁holder▁no▁" + std::to_string(tokens.size()) + "｜>");
    types.push_back(3);
  }
  tokens.resize(V);
  types.resize(V);
  w.set("tokenizer.ggml.model", Value::str("gpt2"));
  w.set("tokenizer.ggml.pre", Value::str("joyai-llm"));
  w.set("tokenizer.ggml.tokens", Value::array_str(tokens));
  w.set("tokenizer.ggml.token_type", Value::array_i32(types));
  w.set("tokenizer.ggml.merges", Value::array_str({}));
  w.set("tokenizer.ggml.bos_token_id", Value::u32(256));
  w.set("tokenizer.ggml.eos_token_id", Value::u32(257));
}

void add_all(const std::vector<TensorSpec>& ts, const TinySpec& s, bool zeros, gguf::Writer& w) {
  for (const auto& t : ts) {
    const GgmlType out_type = s.all_f32 && t.type != GgmlType::I32 ? GgmlType::F32 : t.type;
    if (zeros) {
      w.add_tensor_zeros(t.name, t.ne, t.type);
      continue;
    }
    const uint64_t seed = name_seed(s.seed, t.name);
    if (t.type == GgmlType::I32) {  // hash routing table: distinct experts per token
      std::vector<uint8_t> bytes((size_t)t.ne[0] * t.ne[1] * 4);
      uint64_t st = seed;
      for (uint64_t tok_id = 0; tok_id < t.ne[1]; ++tok_id) {
        std::vector<int32_t> row;
        while (row.size() < t.ne[0]) {
          int32_t e = (int32_t)(splitmix(st) % s.n_expert);
          bool dup = false;
          for (int32_t r : row) dup |= r == e;
          if (!dup) row.push_back(e);
        }
        std::memcpy(&bytes[tok_id * t.ne[0] * 4], row.data(), t.ne[0] * 4);
      }
      w.add_tensor(t.name, t.ne, t.type, std::move(bytes));
      continue;
    }
    w.add_tensor(t.name, t.ne, out_type, make_data(t, seed, s.all_f32));
  }
}

}  // namespace

TinySpec tiny_preset(const std::string& name) {
  TinySpec s;
  s.name = "dsv4-" + name + " (random weights)";
  if (name == "tiny") return s;
  if (name == "tiny-k512") {
    s.idx_topk = 512;
    return s;
  }
  if (name == "tiny-q4") {
    s.n_embd = 512;
    s.n_head = 8;
    s.o_groups = 4;
    s.q_lora_rank = 128;
    s.o_lora_rank = 64;
    s.n_expert = 16;
    s.expert_ff = 256;
    s.idx_n_head = 8;
    s.idx_topk = 32;
    s.expert_gate_type = GgmlType::Q4_K;
    s.expert_down_type = GgmlType::Q4_K;
    s.seed = 7;
    return s;
  }
  fail("unknown tiny preset '{}' (known: tiny, tiny-k512, tiny-q4)", name);
}

TinyFiles build_tiny_model(const TinySpec& s) {
  std::unique_ptr<gguf::File> tok;
  if (!s.tokenizer_gguf.empty())
    tok = std::make_unique<gguf::File>(gguf::File::open(s.tokenizer_gguf));
  const uint32_t V = vocab_size(s, tok.get());
  TinyFiles f;
  set_metadata(s, V, f.main);
  if (tok) {
    for (const auto& [k, v] : tok->metadata())
      if (k.rfind("tokenizer.", 0) == 0) f.main.set(k, v);
  } else {
    set_byte_vocab(V, f.main);
  }
  add_all(list_main(s, V), s, false, f.main);
  if (s.mtp) {
    set_metadata(s, V, f.mtp);
    add_all(list_mtp(s), s, false, f.mtp);
  }
  return f;
}

void write_tiny_model(const TinySpec& s, const std::string& path, const std::string& mtp_path) {
  TinyFiles f = build_tiny_model(s);
  f.main.write_file(path);
  if (s.mtp && !mtp_path.empty()) f.mtp.write_file(mtp_path);
}

namespace {

TinySpec flash_spec(const std::string& recipe) {
  TinySpec s;
  s.name = "DeepSeek V4 Flash layout (" + recipe + ", zero weights)";
  s.n_embd = 4096;
  s.ratios.clear();
  for (uint32_t l = 0; l < 43; ++l) s.ratios.push_back(l < 2 ? 0 : (l % 2 == 0 ? 4 : 128));
  s.n_head = 64;
  s.q_lora_rank = 1024;
  s.o_groups = 8;
  s.o_lora_rank = 1024;
  s.n_expert = 256;
  s.expert_ff = 2048;
  s.idx_n_head = 64;
  s.idx_topk = 512;
  s.vocab = 129280;
  if (recipe == "q4" || recipe == "mtp") s.expert_gate_type = s.expert_down_type = GgmlType::Q4_K;
  if (recipe != "q2" && recipe != "q4" && recipe != "mtp")
    fail("unknown layout recipe '{}' (known: q2, q4, mtp)", recipe);
  return s;
}

std::vector<gguf::TensorInfo> to_infos(const std::vector<TensorSpec>& ts) {
  std::vector<gguf::TensorInfo> out;
  out.reserve(ts.size());
  for (const auto& t : ts) {
    gguf::TensorInfo i;
    i.name = t.name;
    i.ne = t.ne;
    i.type = t.type;
    uint64_t rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) rows *= t.ne[d];
    i.nbytes = ggml_row_bytes(t.type, t.ne[0]) * rows;
    out.push_back(std::move(i));
  }
  return out;
}

}  // namespace

LayoutModel build_layout_model(const std::string& recipe) {
  const TinySpec s = flash_spec(recipe);
  LayoutModel m;
  set_metadata(s, s.vocab, m.meta);
  m.tensors = to_infos(recipe == "mtp" ? list_mtp(s) : list_main(s, s.vocab));
  return m;
}

ModelConfig layout_config(const LayoutModel& m) {
  const gguf::File f = gguf::File::parse(MappedFile::from_bytes(m.meta.to_bytes(), "layout"));
  return read_model_config(f);
}

LayoutModel layout_of_spec(const TinySpec& s) {
  std::unique_ptr<gguf::File> tok;
  if (!s.tokenizer_gguf.empty())
    tok = std::make_unique<gguf::File>(gguf::File::open(s.tokenizer_gguf));
  const uint32_t V = vocab_size(s, tok.get());
  LayoutModel m;
  set_metadata(s, V, m.meta);
  if (!tok) set_byte_vocab(V, m.meta);
  m.tensors = to_infos(list_main(s, V));
  return m;
}

void write_layout_model(const std::string& recipe, const std::string& path) {
  const TinySpec s = flash_spec(recipe);
  gguf::Writer w;
  set_metadata(s, s.vocab, w);
  add_all(recipe == "mtp" ? list_mtp(s) : list_main(s, s.vocab), s, true, w);
  w.write_file(path);
}

}  // namespace dsv4
