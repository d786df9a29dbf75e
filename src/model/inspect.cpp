#include "model/inspect.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace dsv4 {
namespace {

bool is_routed(const std::string& name) {
  return name.find("_exps.weight") != std::string::npos;
}

bool published_types(const Model& m, GgmlType gate, GgmlType down) {
  for (const auto& t : m.file->tensors()) {
    const std::string& n = t.name;
    GgmlType want;
    if (n.find("ffn_gate_exps") != std::string::npos || n.find("ffn_up_exps") != std::string::npos)
      want = gate;
    else if (n.find("ffn_down_exps") != std::string::npos)
      want = down;
    else if (n.find("tid2eid") != std::string::npos)
      want = GgmlType::I32;
    else if (n.find("indexer.") != std::string::npos)
      want = GgmlType::F16;
    else if (n == "output.weight" || n.find("attn_q_a.") != std::string::npos ||
             n.find("attn_q_b.") != std::string::npos || n.find("attn_kv.") != std::string::npos ||
             n.find("attn_output_") != std::string::npos || n.find("shexp") != std::string::npos)
      want = GgmlType::Q8_0;
    else if (n == "token_embd.weight" || n.find("_fn.") != std::string::npos ||
             n.find("compressor_ape") != std::string::npos ||
             n.find("compressor_kv") != std::string::npos ||
             n.find("compressor_gate") != std::string::npos ||
             n.find("indexer.") != std::string::npos || n.find("ffn_gate_inp") != std::string::npos)
      want = GgmlType::F16;
    else
      want = GgmlType::F32;
    if (t.type != want) return false;
  }
  return true;
}

}  // namespace

ModelSummary summarize(const Model& m) {
  ModelSummary s;
  const ModelConfig& c = m.cfg;
  const std::string recipe = expert_recipe(m.w);
  s.recognised = fmt::format("DeepSeek V4 Flash{}, routed experts {}",
                             c.is_flash_shape() ? "" : " family (custom dimensions)", recipe);
  s.layout = "custom";
  if (c.is_flash_shape()) {
    if (published_types(m, GgmlType::IQ2_XXS, GgmlType::Q2_K)) s.layout = "published q2";
    if (published_types(m, GgmlType::Q4_K, GgmlType::Q4_K)) s.layout = "published q4";
  }
  const double used_frac = (double)c.n_expert_used / c.n_expert;
  for (const auto& t : m.file->tensors()) {
    ++s.n_tensors;
    const uint64_t n = t.n_elements();
    s.params_total += n;
    s.bytes_total += t.nbytes;
    s.bytes_by_type[std::string(ggml_type_name(t.type))] += t.nbytes;
    if (t.name.rfind("mtp.", 0) == 0) continue;
    if (t.name == "token_embd.weight") {
      s.bytes_per_token += t.nbytes / t.ne[1];
    } else if (t.name.find("tid2eid") != std::string::npos) {
      s.params_active += 0;
      s.bytes_per_token += t.nbytes / t.ne[1];
    } else if (is_routed(t.name)) {
      s.params_active += (uint64_t)(n * used_frac + 0.5);
      s.bytes_per_token += (uint64_t)(t.nbytes * used_frac + 0.5);
    } else {
      s.params_active += n;
      s.bytes_per_token += t.nbytes;
    }
  }
  // tid2eid holds integers, not parameters, in the published count (spec/ARCH.md §14.1 lists it
  // separately); keep it in the total as ds4 and llama.cpp do.
  if (m.mtp_file)
    for (const auto& t : m.mtp_file->tensors()) s.params_mtp += t.n_elements();
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const uint32_t r = c.ratio(l);
    std::string attn = r == 0 ? "window only" : (r == 4 ? "ratio 4 + indexer" : "ratio 128");
    s.layer_schedule.push_back(
        fmt::format("{}: {}, {} routing", l, attn, c.is_hash_layer(l) ? "hash" : "biased top-k"));
  }
  return s;
}

std::string summary_text(const ModelSummary& s) {
  std::string o;
  o += fmt::format("model:            {}\n", s.recognised);
  o += fmt::format("layout:           {}\n", s.layout);
  o += fmt::format("tensors:          {}\n", s.n_tensors);
  o += fmt::format("parameters:       {:.2f} B total, {:.2f} B active per token\n",
                   s.params_total / 1e9, s.params_active / 1e9);
  if (s.params_mtp) o += fmt::format("MTP parameters:   {:.2f} B\n", s.params_mtp / 1e9);
  o += fmt::format("tensor bytes:     {} ({:.2f} GiB)\n", s.bytes_total,
                   s.bytes_total / 1073741824.0);
  for (const auto& [t, b] : s.bytes_by_type)
    o += fmt::format("  {:<8} {:>16} ({:.2f} GiB)\n", t, b, b / 1073741824.0);
  o += fmt::format("bytes per decoded token (weights, batch 1): {:.3f} GB\n",
                   s.bytes_per_token / 1e9);
  o += "layers:\n";
  for (const auto& l : s.layer_schedule) o += "  " + l + "\n";
  return o;
}

std::string summary_json(const ModelSummary& s) {
  nlohmann::ordered_json j;
  j["recognised"] = s.recognised;
  j["layout"] = s.layout;
  j["n_tensors"] = s.n_tensors;
  j["params_total"] = s.params_total;
  j["params_active"] = s.params_active;
  j["params_mtp"] = s.params_mtp;
  j["bytes_total"] = s.bytes_total;
  j["bytes_by_type"] = s.bytes_by_type;
  j["bytes_per_token"] = s.bytes_per_token;
  j["layers"] = s.layer_schedule;
  return j.dump(2);
}

}  // namespace dsv4
