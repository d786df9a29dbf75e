// tokenizer.json -> vocabulary conversion on synthetic files, and the V4 table's shape. The
// conversion of the real DeepSeek tokenizer.json is covered by test_tokenizer_vectors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "small_vocab.h"
#include "text/pretokenizer.h"
#include "text/vocab_convert.h"

using namespace dsv4::text;
using nlohmann::json;

namespace {

json pre_tokenizer_json() {
  json seq = json::array();
  for (const std::string& p : PreTokenizer::json_patterns()) {
    seq.push_back({{"type", "Split"},
                   {"pattern", {{"Regex", p}}},
                   {"behavior", "Isolated"},
                   {"invert", false}});
  }
  seq.push_back({{"type", "ByteLevel"},
                 {"add_prefix_space", false},
                 {"trim_offsets", true},
                 {"use_regex", false}});
  return {{"type", "Sequence"}, {"pretokenizers", seq}};
}

// A tokenizer.json with the small test vocabulary: base tokens in model.vocab, the chat tokens
// and "<x>", "<x>y" as added tokens.
json small_tokenizer_json() {
  const Vocab v = testdata::small_vocab(true);
  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (v.token_types[i] == int32_t(TokenType::Normal)) {
      vocab[v.tokens[i]] = i;
    } else {
      added.push_back({{"id", i},
                       {"content", v.tokens[i]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", i % 2 == 0}});
    }
  }
  json merges = json::array();
  for (const std::string& m : v.merges) merges.push_back(m);
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array()}}},
      {"pre_tokenizer", pre_tokenizer_json()},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", merges}}}};
}

ConvertOptions small_opts() {
  ConvertOptions o;
  o.vocab_size = uint32_t(testdata::small_vocab(true).tokens.size());
  o.v4_specials = false;
  return o;
}

}  // namespace

TEST(VocabConvert, SmallTokenizerJson) {
  const Vocab v = convert_hf_tokenizer_json(small_tokenizer_json().dump(), small_opts());
  const Vocab ref = testdata::small_vocab(true);
  EXPECT_EQ(v.tokens, ref.tokens);
  EXPECT_EQ(v.merges, ref.merges);
  ASSERT_EQ(v.token_types.size(), ref.tokens.size());
  const Tokenizer t = Tokenizer::from_vocab(v);
  EXPECT_EQ(t.encode_with_specials("<think>hello</think>").size(), 3u);
  // Added tokens: special ones or `<｜...｜>` lookalikes are CONTROL, the others USER_DEFINED.
  EXPECT_EQ(t.token_type(t.special_id("<｜User｜>")), TokenType::Control);
  EXPECT_TRUE(t.is_special(t.special_id("<x>")));
}

TEST(VocabConvert, NewStyleMergePairs) {
  json j = small_tokenizer_json();
  json pairs = json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    pairs.push_back(json::array({s.substr(0, sp), s.substr(sp + 1)}));
  }
  j["model"]["merges"] = pairs;
  const Vocab v = convert_hf_tokenizer_json(j.dump(), small_opts());
  EXPECT_EQ(v.merges, testdata::small_vocab(true).merges);
}

TEST(VocabConvert, RejectsOtherTokenizers) {
  auto expect_error = [](const json& j, const std::string& needle) {
    try {
      convert_hf_tokenizer_json(j.dump(), small_opts(), "t.json");
      ADD_FAILURE() << "no error, expected " << needle;
    } catch (const dsv4::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("t.json"), std::string::npos) << e.what();
    }
  };
  {
    json j = small_tokenizer_json();
    j["pre_tokenizer"]["pretokenizers"][2]["pattern"]["Regex"] = "\\s+";
    expect_error(j, "pre_tokenizer step 3");
  }
  {
    json j = small_tokenizer_json();
    j["model"]["type"] = "Unigram";
    expect_error(j, "BPE");
  }
  {
    json j = small_tokenizer_json();
    j["normalizer"] = {{"type", "NFC"}};
    expect_error(j, "normalizer");
  }
  {
    json j = small_tokenizer_json();
    j["added_tokens"][0]["lstrip"] = true;
    expect_error(j, "lstrip");
  }
  {
    json j = small_tokenizer_json();
    j["added_tokens"][0]["id"] = 5;  // collides with a byte token
    expect_error(j, "id 5");
  }
  expect_error(json::object(), "model");
  try {
    convert_hf_tokenizer_json("{not json", small_opts(), "t.json");
    ADD_FAILURE();
  } catch (const dsv4::Error& e) {
    EXPECT_NE(std::string(e.what()).find("JSON"), std::string::npos);
  }
}

TEST(VocabConvert, V4TableShape) {
  const auto& t = v4_added_tokens();
  ASSERT_EQ(t.size(), 1280u);
  std::set<std::string> contents;
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].id, int32_t(128000 + i));
    EXPECT_TRUE(contents.insert(t[i].content).second) << t[i].content;
  }
  auto at = [&](int32_t id) { return t[size_t(id - 128000)].content; };
  EXPECT_EQ(at(128000), "<｜place▁holder▁no▁0｜>");
  EXPECT_EQ(at(128799), "<｜place▁holder▁no▁799｜>");
  EXPECT_EQ(at(128803), special::kUser);
  EXPECT_EQ(at(128804), special::kAssistant);
  EXPECT_EQ(at(128821), special::kThinkStart);
  EXPECT_EQ(at(128822), special::kThinkEnd);
  EXPECT_EQ(at(128825), special::kDsml);
  EXPECT_EQ(at(128828), special::kLatestReminder);
  EXPECT_EQ(at(128829), special::kAction);
  EXPECT_EQ(at(128830), special::kQuery);
  EXPECT_EQ(at(128831), special::kAuthority);
  EXPECT_EQ(at(128832), special::kDomain);
  EXPECT_EQ(at(128836), special::kTitle);
  EXPECT_EQ(at(128844), special::kExtractedUrl);
  EXPECT_EQ(at(128845), special::kReadUrl);
  EXPECT_EQ(at(128847), "<|place_holder_mm_span_0021|>");
  EXPECT_EQ(at(129261), "<|place_holder_mm_span_0435|>");
  EXPECT_EQ(at(129279), "<｜image｜>");
  EXPECT_EQ(added_token_type(t[size_t(128821 - 128000)]), TokenType::UserDefined);
  EXPECT_EQ(added_token_type(t[size_t(128803 - 128000)]), TokenType::Control);
}
