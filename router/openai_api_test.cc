#include "router/openai_api.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace memshare::router::openai {
namespace {

using Json = nlohmann::json;

ParsedRequest Parse(Endpoint e, const std::string& body) {
  auto r = ParseRequest(e, body, "m");
  EXPECT_TRUE(r.ok()) << r.status() << " for " << body;
  return r.ok() ? *r : ParsedRequest();
}

// INVALID_ARGUMENT (or `code`) whose message starts with "<param>:".
void ExpectError(Endpoint e, const std::string& body, const std::string& param,
                 absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  auto r = ParseRequest(e, body, "m");
  ASSERT_FALSE(r.ok()) << body;
  EXPECT_EQ(r.status().code(), code) << r.status();
  EXPECT_EQ(std::string(r.status().message()).substr(0, param.size() + 1), param + ":")
      << r.status();
}

TEST(OpenAiParseTest, CompletionsWithEveryParameter) {
  const ParsedRequest p = Parse(Endpoint::kCompletions, R"({
      "model": "m", "prompt": "Hello", "max_tokens": 7, "temperature": 0, "top_p": 0.5,
      "n": 1, "stream": true, "stream_options": {"include_usage": true}, "stop": ["\n", "END"],
      "presence_penalty": 0.1, "frequency_penalty": -0.1, "seed": 42, "logprobs": 2,
      "echo": false, "best_of": 1, "user": "u", "logit_bias": {}, "suffix": null,
      "top_k": 5, "min_p": 0.05, "repetition_penalty": 1.1, "ignore_eos": true,
      "stop_token_ids": [2, 3], "session_id": "s", "cache_salt": "t", "priority": 4,
      "request_id": "req-1", "memshare": {"mode": "on", "tau_lex": 0.5, "tau_kv": 0.1}})");
  const v1::GenerateRequest& r = p.request;
  EXPECT_EQ(r.text(), "Hello");
  EXPECT_EQ(r.sampling().max_tokens(), 7);
  EXPECT_TRUE(r.sampling().has_temperature());
  EXPECT_EQ(r.sampling().temperature(), 0.0f);
  EXPECT_FLOAT_EQ(r.sampling().top_p(), 0.5f);
  EXPECT_TRUE(p.stream);
  EXPECT_TRUE(p.include_usage);
  EXPECT_TRUE(p.logprobs);
  EXPECT_EQ(r.sampling().logprobs(), 2);
  ASSERT_EQ(r.stop().stop_size(), 2);
  EXPECT_EQ(r.stop().stop(1), "END");
  EXPECT_EQ(r.sampling().seed(), 42u);
  EXPECT_EQ(r.sampling().top_k(), 5);
  EXPECT_TRUE(r.stop().ignore_eos());
  EXPECT_EQ(r.stop().stop_token_ids_size(), 2);
  EXPECT_EQ(r.session_id(), "s");
  EXPECT_EQ(r.cache_salt(), "t");
  EXPECT_EQ(r.priority(), 4);
  EXPECT_EQ(r.request_id(), "req-1");
  EXPECT_EQ(r.memshare().mode(), v1::MemShareOptions::MODE_ON);
  EXPECT_FLOAT_EQ(r.memshare().tau_kv(), 0.1f);
  EXPECT_EQ(p.model, "m");
}

TEST(OpenAiParseTest, PromptForms) {
  EXPECT_EQ(Parse(Endpoint::kCompletions, R"({"prompt": ["one"]})").request.text(), "one");
  const auto ids = Parse(Endpoint::kCompletions, R"({"prompt": [1, 2, 3]})").request;
  EXPECT_EQ(ids.token_ids().ids_size(), 3);
  EXPECT_EQ(Parse(Endpoint::kCompletions, R"({"prompt": [[4, 5]]})").request.token_ids().ids(1), 5);
  // Defaults: unset sampling stays unset; the model defaults to the served one.
  const ParsedRequest p = Parse(Endpoint::kCompletions, R"({"prompt": "x", "stop": null})");
  EXPECT_FALSE(p.request.sampling().has_temperature());
  EXPECT_FALSE(p.request.sampling().has_max_tokens());
  EXPECT_FALSE(p.stream);
  EXPECT_EQ(p.model, "m");
}

TEST(OpenAiParseTest, ChatMessages) {
  const ParsedRequest p = Parse(Endpoint::kChatCompletions, R"({
      "messages": [{"role": "developer", "content": "be brief"},
                   {"role": "user", "content": [{"type": "text", "text": "hi "},
                                                {"type": "text", "text": "there"}],
                    "name": "bob"}],
      "max_completion_tokens": 9, "logprobs": true, "top_logprobs": 3,
      "response_format": {"type": "text"}})");
  const auto& m = p.request.chat().messages();
  ASSERT_EQ(m.size(), 2);
  EXPECT_EQ(m[0].role(), "system");
  EXPECT_EQ(m[1].content(), "hi there");
  EXPECT_EQ(p.request.sampling().max_tokens(), 9);
  EXPECT_EQ(p.request.sampling().logprobs(), 3);
}

TEST(OpenAiParseTest, BadInputNamesTheParameter) {
  const Endpoint c = Endpoint::kCompletions;
  const Endpoint chat = Endpoint::kChatCompletions;
  ExpectError(c, "not json", "body");
  ExpectError(c, "[1]", "body");
  ExpectError(c, "{\"prompt\": \"bad \xff utf8\"}", "body");
  ExpectError(c, R"({"max_tokens": 5})", "prompt");
  ExpectError(c, R"({"prompt": ""})", "prompt");
  ExpectError(c, R"({"prompt": []})", "prompt");
  ExpectError(c, R"({"prompt": ["a", "b"]})", "prompt");
  ExpectError(c, R"({"prompt": [1, -2]})", "prompt[1]");
  ExpectError(c, R"({"prompt": 5})", "prompt");
  ExpectError(c, R"({"prompt": "x", "bogus": 1})", "bogus");
  ExpectError(c, R"({"prompt": "x", "max_tokens": "ten"})", "max_tokens");
  ExpectError(c, R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens");
  ExpectError(c, R"({"prompt": "x", "max_tokens": 0})", "max_tokens");
  ExpectError(c, R"({"prompt": "x", "max_tokens": 99999999999999})", "max_tokens");
  ExpectError(c, R"({"prompt": "x", "temperature": "hot"})", "temperature");
  ExpectError(c, R"({"prompt": "x", "stream": "yes"})", "stream");
  ExpectError(c, R"({"prompt": "x", "stream_options": {"foo": true}})", "stream_options.foo");
  ExpectError(c, R"({"prompt": "x", "n": 2})", "n");
  ExpectError(c, R"({"prompt": "x", "echo": true})", "echo");
  ExpectError(c, R"({"prompt": "x", "best_of": 3})", "best_of");
  ExpectError(c, R"({"prompt": "x", "logit_bias": {"1": 2}})", "logit_bias");
  ExpectError(c, R"({"prompt": "x", "stop": [1]})", "stop[0]");
  ExpectError(c, R"({"prompt": "x", "logprobs": 50})", "logprobs");
  ExpectError(c, R"({"prompt": "x", "seed": -1})", "seed");
  ExpectError(c, R"({"prompt": "x", "memshare": {"mode": "max"}})", "memshare.mode");
  ExpectError(c, R"({"prompt": "x", "memshare": {"tau": 1}})", "memshare.tau");
  ExpectError(c, R"({"prompt": "x", "model": "other"})", "model", absl::StatusCode::kNotFound);
  ExpectError(chat, R"({"messages": []})", "messages");
  ExpectError(chat, R"({"messages": "hi"})", "messages");
  ExpectError(chat, R"({})", "messages");
  ExpectError(chat, R"({"messages": [{"role": "user"}]})", "messages[0].content");
  ExpectError(chat, R"({"messages": [{"role": "king", "content": "x"}]})", "messages[0].role");
  ExpectError(chat, R"({"messages": [{"content": "x"}]})", "messages[0].role");
  ExpectError(chat, R"({"messages": [{"role": "user", "content": "x", "extra": 1}]})",
              "messages[0].extra");
  ExpectError(chat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
              "messages[0].content[0].type");
  ExpectError(chat, R"({"messages": [{"role": "user", "content": "x"}], "tools": [{}]})", "tools");
  ExpectError(chat, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
              "top_logprobs");
  ExpectError(chat, R"({"messages": [{"role": "user", "content": "x"}], "prompt": "x"})", "prompt");
}

TEST(OpenAiErrorTest, ShapeAndStatus) {
  const Json e = Json::parse(ErrorJson(absl::InvalidArgumentError("max_tokens: too big")));
  EXPECT_EQ(e["error"]["message"], "max_tokens: too big");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "max_tokens");
  EXPECT_TRUE(e["error"]["code"].is_null());
  const Json auth = Json::parse(ErrorJson(absl::UnauthenticatedError("invalid API key")));
  EXPECT_EQ(auth["error"]["type"], "authentication_error");
  EXPECT_TRUE(auth["error"]["param"].is_null());
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
}

v1::GenerateResponse Chunk(const std::string& text, std::vector<int> ids) {
  v1::GenerateResponse r;
  r.mutable_chunk()->set_text(text);
  for (int id : ids) r.mutable_chunk()->add_token_ids(id);
  return r;
}

v1::GenerateResponse Result() {
  v1::GenerateResponse r;
  r.mutable_result()->set_finish_reason(v1::FINISH_REASON_LENGTH);
  r.mutable_result()->mutable_usage()->set_prompt_tokens(3);
  r.mutable_result()->mutable_usage()->set_completion_tokens(2);
  r.mutable_result()->mutable_usage()->set_cached_prompt_tokens(1);
  r.mutable_result()->mutable_usage()->set_shared_blocks(4);
  return r;
}

// The JSON objects of "data: " events, and whether [DONE] ended them.
std::vector<Json> Events(const std::string& sse, bool* done) {
  std::vector<Json> out;
  *done = false;
  size_t pos = 0;
  while ((pos = sse.find("data: ", pos)) != std::string::npos) {
    const size_t end = sse.find("\n\n", pos);
    const std::string data = sse.substr(pos + 6, end - pos - 6);
    if (data == "[DONE]") {
      *done = true;
    } else {
      out.push_back(Json::parse(data));
    }
    pos = end + 2;
  }
  return out;
}

TEST(OpenAiResponseTest, CompletionsStreamAndBody) {
  ParsedRequest p = Parse(Endpoint::kCompletions,
                          R"({"prompt": "x", "stream": true,
                              "stream_options": {"include_usage": true}})");
  ResponseBuilder b(p, "cmpl-1", 1700000000);
  std::string sse = b.StreamEvents(Chunk("He", {1}));
  sse += b.StreamEvents(Chunk("llo", {2}));
  sse += b.StreamEvents(Result());
  sse += b.StreamEnd();
  bool done;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["choices"][0]["text"], "He");
  EXPECT_TRUE(events[0]["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(events[2]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(events[3]["choices"].empty());
  EXPECT_EQ(events[3]["usage"]["total_tokens"], 5);
  EXPECT_EQ(events[3]["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
  EXPECT_EQ(events[3]["usage"]["memshare"]["shared_blocks"], 4);

  ResponseBuilder nb(p, "cmpl-2", 1);
  nb.Collect(Chunk("He", {1}));
  nb.Collect(Chunk("llo", {2}));
  nb.Collect(Result());
  const Json body = Json::parse(nb.Body());
  EXPECT_EQ(body["id"], "cmpl-2");
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["choices"][0]["text"], "Hello");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["completion_tokens"], 2);
}

TEST(OpenAiResponseTest, ChatStreamStartsWithTheRoleAndCarriesLogprobs) {
  ParsedRequest p = Parse(Endpoint::kChatCompletions,
                          R"({"messages": [{"role": "user", "content": "x"}], "stream": true,
                              "logprobs": true, "top_logprobs": 1})");
  ResponseBuilder b(p, "chatcmpl-1", 1);
  v1::GenerateResponse c = Chunk("a", {97});
  auto* lp = c.mutable_chunk()->add_logprobs();
  lp->set_token_id(97);
  lp->set_logprob(-0.5f);
  auto* top = lp->add_top();
  top->set_token_id(98);
  top->set_logprob(-1.0f);
  std::string sse = b.StreamEvents(c);
  sse += b.StreamEvents(Result());
  sse += b.StreamEnd();
  bool done;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 3u);  // role, content, finish; no usage chunk unless asked
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events[1]["choices"][0]["delta"]["content"], "a");
  const Json& lps = events[1]["choices"][0]["logprobs"]["content"];
  EXPECT_EQ(lps[0]["token"], "token_id:97");
  EXPECT_EQ(lps[0]["top_logprobs"][0]["token"], "token_id:98");
  EXPECT_TRUE(events[2]["choices"][0]["delta"].empty());
  EXPECT_EQ(events[2]["choices"][0]["finish_reason"], "length");

  const std::string error = ResponseBuilder::StreamError(absl::UnavailableError("worker gone"));
  std::vector<Json> error_events = Events(error, &done);
  EXPECT_TRUE(done);
  EXPECT_EQ(error_events[0]["error"]["message"], "worker gone");
}

TEST(OpenAiResponseTest, Models) {
  v1::ModelInfo info;
  info.set_model_id("qwen");
  info.set_max_model_len(4096);
  const Json j = Json::parse(ModelsJson(info, 5));
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "qwen");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(Json::parse(ModelsJson(v1::ModelInfo(), 5))["data"].size(), 0u);
}

}  // namespace
}  // namespace memshare::router::openai
