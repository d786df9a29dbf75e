// What a model file holds, in numbers: recognised layout, parameter counts, bytes by type,
// layer schedule and the weight bytes a decoded token must read (spec/ARCH.md §14).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/weights.h"

namespace dsv4 {

struct ModelSummary {
  std::string recognised;  // e.g. "DeepSeek V4 Flash, routed experts IQ2_XXS/IQ2_XXS/Q2_K"
  std::string layout;      // "published q2", "published q4", or "custom"
  uint64_t n_tensors = 0;
  uint64_t params_total = 0;   // main model (embedding and head included)
  uint64_t params_active = 0;  // per token: routed k/E, everything else, no embedding table
  uint64_t params_mtp = 0;
  uint64_t bytes_total = 0;  // tensor bytes of the main file
  std::map<std::string, uint64_t> bytes_by_type;
  uint64_t bytes_per_token = 0;             // weights read per decoded token (batch 1)
  std::vector<std::string> layer_schedule;  // per layer, e.g. "ratio 4 + indexer, hash routing"
};

ModelSummary summarize(const Model& m);
std::string summary_text(const ModelSummary& s);
std::string summary_json(const ModelSummary& s);

}  // namespace dsv4
