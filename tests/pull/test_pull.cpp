// dsv4 pull against a loopback server (fake_hf_server.py, started here, killed at the end, and
// self-terminating if this process dies): fresh, resumed, restarted, redirected, retried and
// rejected downloads, checked byte for byte and by SHA-256.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "pull/pull.h"
#include "pull/sha256.h"

using namespace dsv4;
using namespace dsv4::pull;
namespace fs = std::filesystem;

namespace {

constexpr size_t kSize = (3u << 20) + 12345;  // not a multiple of any chunk size

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), (std::streamsize)s.size());
}

std::string pseudo_random(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    s[i] = (char)(x >> 24);
  }
  return s;
}

struct Server {
  pid_t pid = -1;
  int port = 0;
  fs::path root, log;
};

Server g_server;
fs::path g_tmp;
std::string g_data, g_sha;

}  // namespace

class Pull : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/dsv4-pull-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    g_tmp = tmpl;
    g_server.root = g_tmp / "root";
    g_server.log = g_tmp / "server.log";
    fs::create_directories(g_server.root);
    g_data = pseudo_random(kSize, 0x9e3779b97f4a7c15ull);
    g_sha = Sha256::of(g_data);
    write_file(g_server.root / "model.gguf", g_data);
    const fs::path port_file = g_tmp / "port";
    const std::string script = std::string(DSV4_SOURCE_DIR) + "/tests/pull/fake_hf_server.py";
    const pid_t parent = getpid();
    g_server.pid = fork();
    ASSERT_GE(g_server.pid, 0);
    if (g_server.pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the test
      if (getppid() != parent) _exit(1);
      const std::string parent_s = std::to_string(parent);
      execl(DSV4_PYTHON3, DSV4_PYTHON3, script.c_str(), "--root", g_server.root.c_str(), "--log",
            g_server.log.c_str(), "--port-file", port_file.c_str(), "--parent", parent_s.c_str(),
            "--max-seconds", "300", (char*)nullptr);
      _exit(127);
    }
    for (int i = 0; i < 300 && !fs::exists(port_file); ++i) {
      int st;
      if (waitpid(g_server.pid, &st, WNOHANG) == g_server.pid) {
        g_server.pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (fs::exists(port_file)) g_server.port = std::stoi(read_file(port_file));
  }

  static void TearDownTestSuite() {
    if (g_server.pid > 0) {
      kill(g_server.pid, SIGKILL);
      waitpid(g_server.pid, nullptr, 0);
      g_server.pid = -1;
    }
    std::error_code ec;
    fs::remove_all(g_tmp, ec);
  }

  void SetUp() override {
    alarm(120);  // bounded: a hung test dies (and the server with it, PR_SET_PDEATHSIG)
    ASSERT_GT(g_server.port, 0) << "the loopback server did not start (" << DSV4_PYTHON3 << ")";
    name_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = g_tmp / name_;
    fs::create_directories(dir_);
    log_ = open_memstream(&log_buf_, &log_len_);
    ASSERT_NE(log_, nullptr);
  }

  void TearDown() override {
    alarm(0);
    if (HasFailure() || std::getenv("DSV4_PULL_TEST_VERBOSE"))
      std::fprintf(stderr, "--- pull messages ---\n%s", messages().c_str());
    if (log_) std::fclose(log_);
    std::free(log_buf_);
  }

  std::string url(const std::string& opts, const std::string& file = "model.gguf") const {
    return fmt::format("http://127.0.0.1:{}/{}{}id={}/{}", g_server.port, opts,
                       opts.empty() ? "" : ",", name_, file);
  }
  fs::path dest() const { return dir_ / "model.gguf"; }
  fs::path part() const { return dir_ / "model.gguf.part"; }

  PullOptions options(const std::string& opts) {
    PullOptions o;
    o.url = url(opts);
    o.dest = dest();
    o.max_retries = 3;
    o.backoff_initial_s = 0.01;
    o.backoff_max_s = 0.05;
    o.connect_timeout_s = 5;
    o.stall_timeout_s = 10;
    o.progress = ProgressMode::Plain;
    o.log = log_;
    return o;
  }

  std::string messages() {
    std::fflush(log_);
    return std::string(log_buf_, log_len_);
  }

  // The server's log lines for this test's requests, in arrival order.
  std::vector<nlohmann::json> requests() const {
    std::vector<nlohmann::json> out;
    std::ifstream in(g_server.log);
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j["path"].get<std::string>().find("id=" + name_ + "/") != std::string::npos)
        out.push_back(j);
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return a["seq"].template get<int>() < b["seq"].template get<int>();
    });
    return out;
  }

  void expect_good_final(const PullResult& r) {
    EXPECT_EQ(r.bytes, kSize);
    EXPECT_EQ(r.sha256, g_sha);
    EXPECT_TRUE(fs::exists(dest()));
    EXPECT_FALSE(fs::exists(part()));
    EXPECT_EQ(Sha256::of(read_file(dest())), g_sha);
  }

  std::string name_;
  fs::path dir_;
  std::FILE* log_ = nullptr;
  char* log_buf_ = nullptr;
  size_t log_len_ = 0;
};

TEST_F(Pull, FreshDownload) {
  const PullResult r = pull_file(options(""));
  expect_good_final(r);
  EXPECT_TRUE(r.sha256_verified);
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(r.downloaded, kSize);
  const auto req = requests();
  ASSERT_EQ(req.size(), 1u);
  EXPECT_TRUE(req[0]["range"].is_null());
  EXPECT_NE(messages().find("MB/s"), std::string::npos) << messages();
  EXPECT_NE(messages().find("Saved"), std::string::npos) << messages();
}

TEST_F(Pull, FreshDownloadWithoutPublishedHash) {
  const PullResult r = pull_file(options("etag=none"));
  expect_good_final(r);
  EXPECT_FALSE(r.sha256_verified);
  EXPECT_NE(messages().find("not verified"), std::string::npos);
}

TEST_F(Pull, InterruptedThenResumedInALaterRun) {
  PullOptions o = options("drop=1000000");
  o.max_retries = 0;
  EXPECT_THROW(pull_file(o), Error);
  EXPECT_FALSE(fs::exists(dest()));
  ASSERT_TRUE(fs::exists(part()));
  const uint64_t have = fs::file_size(part());
  EXPECT_GT(have, 0u);
  EXPECT_LT(have, kSize);
  EXPECT_EQ(read_file(part()), g_data.substr(0, have));

  const PullResult r = pull_file(options("drop=1000000"));  // the server drops only once
  expect_good_final(r);
  EXPECT_TRUE(r.sha256_verified);
  EXPECT_EQ(r.downloaded, kSize - have);
  const auto req = requests();
  ASSERT_EQ(req.size(), 2u);
  EXPECT_EQ(req[1]["range"], fmt::format("bytes={}-", have));
  EXPECT_EQ(req[1]["status"], 206);
  EXPECT_EQ(req[1]["sent"], kSize - have);
}

TEST_F(Pull, ResumesWithinOneRunAfterRepeatedDrops) {
  const PullResult r = pull_file(options("dropall=700000"));
  expect_good_final(r);
  EXPECT_TRUE(r.sha256_verified);
  EXPECT_EQ(r.attempts, (int)((kSize + 699999) / 700000));  // more than max_retries: progress
  const auto req = requests();
  ASSERT_EQ(req.size(), (size_t)r.attempts);
  for (size_t i = 1; i < req.size(); ++i) {
    EXPECT_EQ(req[i]["range"], fmt::format("bytes={}-", i * 700000)) << i;
    EXPECT_EQ(req[i]["status"], 206);
  }
}

TEST_F(Pull, ServerIgnoringRangeRestartsFromZero) {
  write_file(part(), pseudo_random(1000000, 42));  // wrong bytes: appending would corrupt
  const PullResult r = pull_file(options("norange"));
  expect_good_final(r);
  EXPECT_EQ(r.downloaded, kSize);
  const auto req = requests();
  ASSERT_EQ(req.size(), 1u);
  EXPECT_EQ(req[0]["range"], "bytes=1000000-");
  EXPECT_EQ(req[0]["status"], 200);
  EXPECT_NE(messages().find("ignored the Range"), std::string::npos) << messages();
}

TEST_F(Pull, RedirectFollowedWithLinkedEtag) {
  // Hugging Face style: the 302 carries x-linked-size/x-linked-etag, the CDN no ETag.
  const PullResult r = pull_file(options("redirect,etag=none"));
  expect_good_final(r);
  EXPECT_TRUE(r.sha256_verified);
  EXPECT_NE(messages().find("x-linked-etag"), std::string::npos) << messages();
  const auto req = requests();
  ASSERT_EQ(req.size(), 2u);
  EXPECT_EQ(req[0]["status"], 302);
  EXPECT_EQ(req[1]["status"], 200);
}

TEST_F(Pull, ResumeAcrossRedirect) {
  write_file(part(), g_data.substr(0, 1234567));
  const PullResult r = pull_file(options("redirect"));
  expect_good_final(r);
  EXPECT_EQ(r.downloaded, kSize - 1234567);
  const auto req = requests();
  ASSERT_EQ(req.size(), 2u);
  EXPECT_EQ(req[1]["range"], "bytes=1234567-");
  EXPECT_EQ(req[1]["status"], 206);
}

TEST_F(Pull, Transient500IsRetried) {
  const PullResult r = pull_file(options("fail500=2"));
  expect_good_final(r);
  EXPECT_EQ(r.attempts, 3);
  EXPECT_NE(messages().find("HTTP 500"), std::string::npos) << messages();
  EXPECT_NE(messages().find("retrying"), std::string::npos);
}

TEST_F(Pull, PersistentFailuresGiveUpAfterMaxRetries) {
  PullOptions o = options("fail500=100");
  o.max_retries = 2;
  try {
    pull_file(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 500"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("giving up after 3 attempts"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(requests().size(), 3u);
  EXPECT_FALSE(fs::exists(dest()));
}

TEST_F(Pull, NotFoundIsNotRetried) {
  PullOptions o = options("");
  o.url = url("", "missing.gguf");
  try {
    pull_file(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("404"), std::string::npos) << e.what();
  }
  EXPECT_EQ(requests().size(), 1u);
  EXPECT_FALSE(fs::exists(dest()));
}

TEST_F(Pull, WrongEtagIsAnErrorAndThePartIsDeleted) {
  try {
    pull_file(options("etag=bad"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("SHA-256 mismatch"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dest()));
  EXPECT_FALSE(fs::exists(part()));
}

TEST_F(Pull, WrongLinkedEtagIsAnError) {
  EXPECT_THROW(pull_file(options("redirect,linked=bad,etag=none")), Error);
  EXPECT_FALSE(fs::exists(dest()));
  EXPECT_FALSE(fs::exists(part()));
}

TEST_F(Pull, WrongUserShaKeepsThePartThenTheRightOneFinishes) {
  PullOptions o = options("etag=none");
  o.sha256 = std::string(64, '2');
  try {
    pull_file(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--sha256"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dest()));
  ASSERT_TRUE(fs::exists(part()));
  EXPECT_EQ(fs::file_size(part()), kSize);

  o.sha256 = g_sha;  // the complete .part is re-hashed; the server answers 416, nothing fetched
  const PullResult r = pull_file(o);
  expect_good_final(r);
  EXPECT_TRUE(r.sha256_verified);
  EXPECT_EQ(r.downloaded, 0u);
  EXPECT_EQ(requests().back()["status"], 416);
}

TEST_F(Pull, MalformedSha256OptionIsRejected) {
  PullOptions o = options("");
  o.sha256 = "abc";
  EXPECT_THROW(pull_file(o), Error);
  EXPECT_TRUE(requests().empty());
}

TEST_F(Pull, PartLargerThanRemoteRestarts) {
  write_file(part(), g_data + pseudo_random(5000, 7));
  const PullResult r = pull_file(options(""));
  expect_good_final(r);
  EXPECT_EQ(r.downloaded, kSize);
  const auto req = requests();
  ASSERT_EQ(req.size(), 2u);
  EXPECT_EQ(req[0]["status"], 416);
  EXPECT_TRUE(req[1]["range"].is_null());
  EXPECT_NE(messages().find("larger than the remote file"), std::string::npos) << messages();
}

TEST_F(Pull, MismatchedContentRangeRestartsWithoutRanges) {
  write_file(part(), g_data.substr(0, 500000));
  const PullResult r = pull_file(options("badrange"));
  expect_good_final(r);
  const auto req = requests();
  ASSERT_EQ(req.size(), 2u);
  EXPECT_EQ(req[0]["range"], "bytes=500000-");
  EXPECT_TRUE(req[1]["range"].is_null());
}

TEST_F(Pull, TokenRequiredAndSent) {
  try {
    pull_file(options("auth=s3cret"));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("401"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("HF_TOKEN"), std::string::npos) << e.what();
  }
  EXPECT_EQ(requests().size(), 1u);
  PullOptions o = options("auth=s3cret");
  o.token = "s3cret";
  expect_good_final(pull_file(o));
  EXPECT_EQ(requests().back()["auth"], "Bearer s3cret");
}

TEST_F(Pull, TokenNotForwardedToAnotherHost) {
  PullOptions o = options("auth=s3cret,redirecthost");
  o.token = "s3cret";
  expect_good_final(pull_file(o));
  const auto req = requests();
  ASSERT_EQ(req.size(), 2u);
  EXPECT_EQ(req[0]["auth"], "Bearer s3cret");
  EXPECT_TRUE(req[1]["auth"].is_null());
}

TEST_F(Pull, CancelLeavesAResumablePart) {
  std::atomic<bool> cancel{false};
  PullOptions o = options("slow=50");  // about 2.5 s for the whole file
  o.cancel = &cancel;
  std::thread t([&] {  // cancel (as SIGINT does) once some bytes have landed
    std::error_code ec;
    for (int i = 0; i < 2000 && !(fs::exists(part(), ec) && fs::file_size(part(), ec) > 0); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    cancel = true;
  });
  try {
    pull_file(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("interrupted"), std::string::npos) << e.what();
  }
  t.join();
  EXPECT_FALSE(fs::exists(dest()));
  ASSERT_TRUE(fs::exists(part()));
  const uint64_t have = fs::file_size(part());
  EXPECT_GT(have, 0u);
  EXPECT_LT(have, kSize);
  EXPECT_EQ(read_file(part()), g_data.substr(0, have));

  const PullResult r = pull_file(options(""));
  expect_good_final(r);
  EXPECT_EQ(r.downloaded, kSize - have);
}

TEST_F(Pull, PartInUseByAnotherPullIsRefused) {
  write_file(part(), g_data.substr(0, 1000));
  const int fd = ::open(part().c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  try {
    pull_file(options(""));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("locked"), std::string::npos) << e.what();
  }
  ::close(fd);
  EXPECT_TRUE(requests().empty());
}

TEST_F(Pull, ExistingFileIsLeftAlone) {
  write_file(dest(), "already here");
  const PullResult r = pull_file(options(""));
  EXPECT_TRUE(r.already_present);
  EXPECT_EQ(read_file(dest()), "already here");
  EXPECT_TRUE(requests().empty());
}

TEST(PullModels, NamesAndFiles) {
  EXPECT_EQ(resolve_model("q2").file,
            "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf");
  EXPECT_EQ(resolve_model("q2-imatrix").file,
            "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf");
  EXPECT_EQ(resolve_model("q4").file,
            "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-"
            "chat-v2.gguf");
  EXPECT_EQ(resolve_model("q4-imatrix").file,
            "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-"
            "chat-v2-imatrix.gguf");
  EXPECT_EQ(resolve_model("mtp").file, "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf");
  EXPECT_EQ(model_url(kDefaultUrlBase, "x.gguf"),
            "https://huggingface.co/antirez/deepseek-v4-gguf/resolve/main/x.gguf");
  EXPECT_EQ(model_url("http://h/m/", "x.gguf"), "http://h/m/x.gguf");
}

TEST(PullModels, UnknownNameListsTheKnownOnes) {
  try {
    resolve_model("q3");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("unknown model 'q3'"), std::string::npos) << w;
    for (const auto& m : known_models())
      EXPECT_NE(w.find(std::string(m.name)), std::string::npos) << m.name;
  }
}

TEST(PullSha256, KnownAnswersAndNormalization) {
  EXPECT_EQ(Sha256::of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;  // incremental == one shot, and reusable after hex_digest
  h.update("a", 1);
  h.update("bc", 2);
  EXPECT_EQ(h.hex_digest(), Sha256::of("abc"));
  h.update("abc", 3);
  EXPECT_EQ(h.hex_digest(), Sha256::of("abc"));
  const std::string s = Sha256::of("abc");
  EXPECT_EQ(normalize_sha256("\"" + s + "\""), s);
  EXPECT_EQ(normalize_sha256("W/\"" + s + "\""), s);
  std::string upper = s;
  for (char& c : upper) c = (char)std::toupper((unsigned char)c);
  EXPECT_EQ(normalize_sha256(upper), s);
  EXPECT_EQ(normalize_sha256("\"d41d8cd98f00b204e9800998ecf8427e\""), "");  // md5-like ETag
  EXPECT_EQ(normalize_sha256(std::string(63, 'a') + "g"), "");
}

TEST(PullFormat, BytesAndDurations) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(86713235456ull), "80.76 GiB");
  EXPECT_EQ(format_duration(12.4), "12s");
  EXPECT_EQ(format_duration(187), "3m07s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(NAN), "--");
}
