#include "engine/server/request_conversion.h"

#include <cmath>
#include <limits>
#include <string>

#include "gtest/gtest.h"

namespace memshare::engine {
namespace {

RequestLimits Limits() {
  RequestLimits l;
  l.max_model_len = 100;
  l.vocab_size = 1000;
  l.default_max_tokens = 16;
  l.max_prompt_bytes = 64;
  return l;
}

v1::GenerateRequest TextRequest(const std::string& text) {
  v1::GenerateRequest r;
  r.set_request_id("r1");
  r.set_text(text);
  return r;
}

// INVALID_ARGUMENT whose message starts with `field`.
void ExpectInvalid(const v1::GenerateRequest& r, const std::string& field) {
  auto out = ToEngineRequest(r, Limits(), absl::InfiniteFuture());
  ASSERT_FALSE(out.ok()) << field;
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  EXPECT_EQ(std::string(out.status().message()).substr(0, field.size() + 1), field + ":")
      << out.status();
}

TEST(IsValidUtf8Test, AcceptsWellFormedAndRejectsMalformed) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("a\xe2\x82"));
}

TEST(RequestConversionTest, ConvertsEveryField) {
  v1::GenerateRequest r = TextRequest("hello");
  auto* s = r.mutable_sampling();
  s->set_temperature(0.0f);
  s->set_top_k(5);
  s->set_top_p(0.9f);
  s->set_min_p(0.1f);
  s->set_repetition_penalty(1.1f);
  s->set_presence_penalty(0.5f);
  s->set_frequency_penalty(-0.5f);
  s->set_seed(7);
  s->set_max_tokens(12);
  s->set_logprobs(3);
  r.mutable_stop()->add_stop("\n\n");
  r.mutable_stop()->add_stop_token_ids(2);
  r.mutable_stop()->set_ignore_eos(true);
  r.mutable_memshare()->set_mode(v1::MemShareOptions::MODE_ON);
  r.mutable_memshare()->set_tau_lex(0.6f);
  r.mutable_memshare()->set_tau_kv(0.2f);
  r.set_cache_salt("tenant");
  r.set_priority(3);
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  auto out = ToEngineRequest(r, Limits(), deadline);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->request_id, "r1");
  EXPECT_EQ(out->prompt_text, "hello");
  EXPECT_EQ(out->sampling.temperature, 0.0f);
  EXPECT_EQ(out->sampling.top_k, 5);
  EXPECT_FLOAT_EQ(out->sampling.top_p, 0.9f);
  EXPECT_FLOAT_EQ(out->sampling.min_p, 0.1f);
  EXPECT_FLOAT_EQ(out->sampling.repetition_penalty, 1.1f);
  EXPECT_FLOAT_EQ(out->sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(out->sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(out->sampling.seed, 7u);
  EXPECT_EQ(out->sampling.max_tokens, 12);
  EXPECT_EQ(out->sampling.logprobs, 3);
  EXPECT_EQ(out->sampling.stop, std::vector<std::string>{"\n\n"});
  EXPECT_EQ(out->sampling.stop_token_ids, std::vector<int32_t>{2});
  EXPECT_TRUE(out->sampling.ignore_eos);
  EXPECT_EQ(out->memshare.mode, MemShareParams::Mode::kOn);
  EXPECT_FLOAT_EQ(*out->memshare.tau_lex, 0.6f);
  EXPECT_FLOAT_EQ(*out->memshare.tau_kv, 0.2f);
  EXPECT_EQ(out->cache_salt, "tenant");
  EXPECT_EQ(out->priority, 3);
  EXPECT_EQ(out->deadline, deadline);
}

TEST(RequestConversionTest, DefaultsFollowTheEngineTypes) {
  auto out = ToEngineRequest(TextRequest("x"), Limits(), absl::InfiniteFuture());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->sampling.temperature, 1.0f);
  EXPECT_EQ(out->sampling.top_p, 1.0f);
  EXPECT_EQ(out->sampling.max_tokens, 16);
  EXPECT_FALSE(out->sampling.seed.has_value());
  EXPECT_EQ(out->memshare.mode, MemShareParams::Mode::kServerDefault);

  // Token ids: the default max_tokens is clamped to what fits.
  v1::GenerateRequest ids;
  for (int i = 0; i < 90; ++i) ids.mutable_token_ids()->add_ids(i);
  out = ToEngineRequest(ids, Limits(), absl::InfiniteFuture());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->prompt_token_ids.size(), 90u);
  EXPECT_EQ(out->sampling.max_tokens, 10);
}

TEST(RequestConversionTest, ChatMessages) {
  v1::GenerateRequest r;
  auto* m = r.mutable_chat()->add_messages();
  m->set_role("system");
  m->set_content("be brief");
  m = r.mutable_chat()->add_messages();
  m->set_role("user");
  m->set_content("hi");
  auto out = ToEngineRequest(r, Limits(), absl::InfiniteFuture());
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->messages.size(), 2u);
  EXPECT_EQ(out->messages[1].role, "user");
  EXPECT_EQ(out->messages[1].content, "hi");
}

TEST(RequestConversionTest, BadFieldsAreNamed) {
  ExpectInvalid(v1::GenerateRequest(), "input");
  ExpectInvalid(TextRequest(""), "text");
  ExpectInvalid(TextRequest("bad \xff utf8"), "text");
  ExpectInvalid(TextRequest(std::string(65, 'x')), "text");
  {
    v1::GenerateRequest r;
    r.mutable_token_ids();
    ExpectInvalid(r, "token_ids.ids");
    r.mutable_token_ids()->add_ids(5);
    r.mutable_token_ids()->add_ids(1000);
    ExpectInvalid(r, "token_ids.ids[1]");
    r.mutable_token_ids()->set_ids(1, -1);
    ExpectInvalid(r, "token_ids.ids[1]");
    r.mutable_token_ids()->clear_ids();
    for (int i = 0; i < 100; ++i) r.mutable_token_ids()->add_ids(1);
    ExpectInvalid(r, "token_ids.ids");  // prompt over the limit
    r.mutable_token_ids()->clear_ids();
    for (int i = 0; i < 95; ++i) r.mutable_token_ids()->add_ids(1);
    r.mutable_sampling()->set_max_tokens(10);
    ExpectInvalid(r, "sampling.max_tokens");  // prompt + max_tokens too long
  }
  {
    v1::GenerateRequest r;
    r.mutable_chat();
    ExpectInvalid(r, "chat.messages");
    auto* m = r.mutable_chat()->add_messages();
    m->set_role("wizard");
    ExpectInvalid(r, "chat.messages[0].role");
    m->set_role("user");
    m->set_content("\xc3(");
    ExpectInvalid(r, "chat.messages[0].content");
  }
  auto with = [](auto set) {
    v1::GenerateRequest r = TextRequest("x");
    set(r);
    return r;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_max_tokens(0); }),
                "sampling.max_tokens");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_max_tokens(1 << 30); }),
                "sampling.max_tokens");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_temperature(-1); }),
                "sampling.temperature");
  ExpectInvalid(with([&](auto& r) { r.mutable_sampling()->set_temperature(nan); }),
                "sampling.temperature");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_top_p(0); }), "sampling.top_p");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_top_p(1.5); }), "sampling.top_p");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_top_k(-1); }), "sampling.top_k");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_min_p(2); }), "sampling.min_p");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_repetition_penalty(0); }),
                "sampling.repetition_penalty");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_presence_penalty(3); }),
                "sampling.presence_penalty");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_frequency_penalty(-3); }),
                "sampling.frequency_penalty");
  ExpectInvalid(with([](auto& r) { r.mutable_sampling()->set_logprobs(21); }), "sampling.logprobs");
  ExpectInvalid(with([](auto& r) { r.mutable_stop()->add_stop(""); }), "stop.stop[0]");
  ExpectInvalid(with([](auto& r) {
                  for (int i = 0; i < 17; ++i) r.mutable_stop()->add_stop("s");
                }),
                "stop.stop");
  ExpectInvalid(with([](auto& r) { r.mutable_stop()->add_stop_token_ids(5000); }),
                "stop.stop_token_ids[0]");
  ExpectInvalid(with([](auto& r) { r.mutable_memshare()->set_tau_lex(1.5); }), "memshare.tau_lex");
  ExpectInvalid(with([](auto& r) { r.mutable_memshare()->set_tau_kv(-0.1f); }), "memshare.tau_kv");
  ExpectInvalid(with([](auto& r) {
                  r.mutable_memshare()->set_mode(v1::MemShareOptions::MODE_OFF);
                  r.mutable_memshare()->set_tau_kv(0.1f);
                }),
                "memshare");
  ExpectInvalid(with([](auto& r) {
                  r.mutable_memshare()->set_mode(static_cast<v1::MemShareOptions::Mode>(9));
                }),
                "memshare.mode");
  ExpectInvalid(with([](auto& r) { r.set_request_id("has space"); }), "request_id");
  ExpectInvalid(with([](auto& r) { r.set_request_id(std::string(129, 'a')); }), "request_id");
  ExpectInvalid(with([](auto& r) { r.set_session_id(std::string(257, 'a')); }), "session_id");
  ExpectInvalid(with([](auto& r) { r.set_cache_salt(std::string(257, 'a')); }), "cache_salt");
}

TEST(RequestConversionTest, EventsCoalesceIntoChunksAndResults) {
  StreamEvent a;
  a.token_ids = {1, 2};
  a.text_delta = "ab";
  a.logprobs = {{1, -0.5f, {{1, -0.5f}, {3, -2.0f}}}, {2, -0.1f, {}}};
  StreamEvent b;
  b.token_ids = {3};
  b.text_delta = "c";
  v1::TokenChunk chunk;
  AppendToChunk(a, &chunk);
  AppendToChunk(b, &chunk);
  EXPECT_EQ(chunk.token_ids_size(), 3);
  EXPECT_EQ(chunk.text(), "abc");
  ASSERT_EQ(chunk.logprobs_size(), 2);
  EXPECT_EQ(chunk.logprobs(0).top_size(), 2);
  EXPECT_FLOAT_EQ(chunk.logprobs(0).top(1).logprob(), -2.0f);

  StreamEvent end;
  end.finished = true;
  end.finish_reason = FinishReason::kLength;
  end.usage = {.prompt_tokens = 4,
               .completion_tokens = 3,
               .cached_prompt_tokens = 2,
               .kv_blocks_peak_physical = 5,
               .kv_blocks_peak_logical = 7,
               .shared_blocks = 2};
  const v1::GenerateResult result = ToResult(end);
  EXPECT_EQ(result.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(result.usage().prompt_tokens(), 4);
  EXPECT_EQ(result.usage().cached_prompt_tokens(), 2);
  EXPECT_EQ(result.usage().kv_blocks_peak_logical(), 7);
  EXPECT_EQ(result.usage().shared_blocks(), 2);
}

TEST(RequestConversionTest, LoadAndModelInfo) {
  LoadReport load;
  load.kv_blocks_total = 10;
  load.kv_blocks_used = 4;
  load.dedup_remapped = 3;
  const v1::LoadReport p = ToProto(load);
  EXPECT_DOUBLE_EQ(p.kv_usage(), 0.4);
  EXPECT_EQ(p.dedup_remapped(), 3);
  ModelInfo info;
  info.model_id = "m";
  info.max_model_len = 8;
  info.kv_block_bytes = 4096;
  EXPECT_EQ(ToProto(info).model_id(), "m");
  EXPECT_EQ(ToProto(info).kv_block_bytes(), 4096);
  EXPECT_EQ(ToProto(info).max_model_len(), 8);
}

}  // namespace
}  // namespace memshare::engine
