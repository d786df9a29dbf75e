// The HTTP layer in-process (runs under ASan/UBSan with the CPU tests): a real HttpServer on a
// free port in front of an Engine on a generated tiny model with scripted output, driven by
// cpp-httplib's client. The SDK-level tests are the node suites next to this file.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <thread>

#include "engine/engine.h"
#include "model/tiny_model.h"
#include "server/http_server.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

class HttpServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ =
        new fs::path(fs::temp_directory_path() / ("dsv4_http_test_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
    TinySpec s = tiny_preset("tiny");
    s.mtp = false;
    write_tiny_model(s, (*dir_ / "tiny.gguf").string(), "");
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }

  void SetUp() override {
    engine::EngineOptions eo;
    eo.model_path = (*dir_ / "tiny.gguf").string();
    eo.model_id = "tiny-test";
    eo.threads = 1;
    eo.scripted_output = "hello world";
    eo.queue_limit = 4;
    eng_ = std::make_unique<engine::Engine>(eo);
    server::ServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    so.api_key = "sekrit";
    so.max_body_bytes = 64 * 1024;
    so.http_threads = 8;
    srv_ = std::make_unique<server::HttpServer>(*eng_, so);
    port_ = srv_->bind();
    ASSERT_GT(port_, 0);
    thread_ = std::thread([this] { srv_->run(); });
  }
  void TearDown() override {
    srv_->stop();
    if (thread_.joinable()) thread_.join();
    srv_.reset();
    eng_.reset();
  }

  httplib::Client client(bool with_key = true) {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(120, 0);
    if (with_key) c.set_default_headers({{"Authorization", "Bearer sekrit"}});
    return c;
  }

  static fs::path* dir_;
  std::unique_ptr<engine::Engine> eng_;
  std::unique_ptr<server::HttpServer> srv_;
  std::thread thread_;
  int port_ = 0;
};
fs::path* HttpServerTest::dir_ = nullptr;

const char* kChat =
    R"({"model":"m","messages":[{"role":"user","content":"hi"}],"reasoning_effort":"none"})";

TEST_F(HttpServerTest, HealthNeedsNoKeyAndModelsDo) {
  auto open = client(false);
  auto h = open.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, R"({"status":"ok"})");
  auto m = open.Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 401);
  EXPECT_NE(m->body.find("\"error\""), std::string::npos);
  auto keyed = client();
  m = keyed.Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_NE(m->body.find("\"tiny-test\""), std::string::npos);
  // x-api-key works too; a wrong key does not; Anthropic paths answer in Anthropic's shape.
  httplib::Client x("127.0.0.1", port_);
  x.set_default_headers({{"x-api-key", "sekrit"}});
  EXPECT_EQ(x.Get("/v1/models/tiny-test")->status, 200);
  httplib::Client wrong("127.0.0.1", port_);
  wrong.set_default_headers({{"x-api-key", "sekriT"}});
  auto w = wrong.Post("/v1/messages", R"({"max_tokens":1,"messages":[]})", "application/json");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->status, 401);
  EXPECT_NE(w->body.find(R"("type":"error")"), std::string::npos) << w->body;
}

TEST_F(HttpServerTest, ChatNonStreamAndStream) {
  auto c = client();
  auto r = c.Post("/v1/chat/completions", kChat, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->body.find("hello world"), std::string::npos) << r->body;
  std::string body = std::string(kChat);
  body.insert(body.size() - 1, R"(,"stream":true)");
  auto s = c.Post("/v1/chat/completions", body, "application/json");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 200);
  EXPECT_EQ(s->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_NE(s->body.find("data: [DONE]"), std::string::npos) << s->body;
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("dsv4_requests_total{status=\"ok\"} 2"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("process_resident_memory_bytes "), std::string::npos);
}

TEST_F(HttpServerTest, CountTokens) {
  auto c = client();
  auto r = c.Post("/v1/messages/count_tokens", R"({"messages":[{"role":"user","content":"hi"}]})",
                  "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->body.rfind(R"({"input_tokens":)", 0), 0u) << r->body;
}

TEST_F(HttpServerTest, ErrorStatuses) {
  auto c = client();
  auto bad_json = c.Post("/v1/chat/completions", "{\"messages\": [", "application/json");
  ASSERT_TRUE(bad_json);
  EXPECT_EQ(bad_json->status, 400);
  auto bad_utf8 =
      c.Post("/v1/chat/completions", "{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
             "application/json");
  ASSERT_TRUE(bad_utf8);
  EXPECT_EQ(bad_utf8->status, 400);
  EXPECT_NE(bad_utf8->body.find("UTF-8"), std::string::npos) << bad_utf8->body;
  auto bad_field = c.Post("/v1/chat/completions",
                          R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})",
                          "application/json");
  ASSERT_TRUE(bad_field);
  EXPECT_EQ(bad_field->status, 400);
  EXPECT_NE(bad_field->body.find("temperature"), std::string::npos) << bad_field->body;
  auto deep = c.Post("/v1/chat/completions",
                     "{\"messages\":" + std::string(5000, '[') + std::string(5000, ']') + "}",
                     "application/json");
  ASSERT_TRUE(deep);
  EXPECT_EQ(deep->status, 400);
  EXPECT_NE(deep->body.find("nested deeper"), std::string::npos) << deep->body;
  auto nf = c.Get("/v1/nothing");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  EXPECT_NE(nf->body.find("\"error\""), std::string::npos);
  auto model404 = c.Get("/v1/models/other");
  ASSERT_TRUE(model404);
  EXPECT_EQ(model404->status, 404);
  auto wrong_method = c.Post("/v1/models", "{}", "application/json");
  ASSERT_TRUE(wrong_method);
  EXPECT_EQ(wrong_method->status, 405);
  auto get_post_path = c.Get("/v1/chat/completions");
  ASSERT_TRUE(get_post_path);
  EXPECT_EQ(get_post_path->status, 405);
  auto big = c.Post("/v1/chat/completions", std::string(100 * 1024, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  // Still serving.
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST_F(HttpServerTest, StopEndsRunWhileAStreamIsOpen) {
  // A stream that would take long (a large max_tokens of the scripted text is not needed: the
  // stop must not wait for clients).
  std::thread t([this] {
    auto c = client();
    std::string body = std::string(kChat);
    body.insert(body.size() - 1, R"(,"stream":true)");
    auto r = c.Post("/v1/chat/completions", body, "application/json");
    (void)r;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  srv_->stop();
  thread_.join();
  t.join();
  SUCCEED();
}

}  // namespace
}  // namespace dsv4
