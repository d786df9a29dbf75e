// The published files `dsv4 pull` knows (ARCH.md §11.3; antirez/ds4 download_model.sh), and the
// formatting helpers shared by the progress display.
#include <fmt/core.h>

#include <array>
#include <cmath>

#include "core/error.h"
#include "pull/pull.h"

namespace dsv4::pull {

namespace {

constexpr std::array<ModelEntry, 5> kModels{{
    {"q2", "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf",
     "2-bit routed experts (IQ2_XXS gate/up, Q2_K down), about 81 GiB"},
    {"q2-imatrix", "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf",
     "q2 with importance-matrix expert quantization, about 81 GiB"},
    {"q4",
     "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2."
     "gguf",
     "4-bit routed experts (Q4_K), about 153 GiB"},
    {"q4-imatrix",
     "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-"
     "imatrix.gguf",
     "q4 with importance-matrix expert quantization, about 153 GiB"},
    {"mtp", "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf",
     "multi-token-prediction draft layer (use with --mtp), about 3.5 GiB"},
}};

}  // namespace

std::span<const ModelEntry> known_models() {
  return kModels;
}

const ModelEntry& resolve_model(std::string_view name) {
  for (const auto& m : kModels)
    if (m.name == name) return m;
  std::string list;
  for (const auto& m : kModels) list += fmt::format("\n  {:<11} {}", m.name, m.about);
  if (name.empty()) fail("pull: name the model to download:{}", list);
  fail("pull: unknown model '{}'; known models:{}", name, list);
}

std::string model_url(std::string_view url_base, std::string_view file) {
  while (!url_base.empty() && url_base.back() == '/') url_base.remove_suffix(1);
  return fmt::format("{}/{}", url_base, file);
}

std::string format_bytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.2f} {}", v, units[u]);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const uint64_t s = (uint64_t)std::llround(seconds);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

}  // namespace dsv4::pull
