// The OpenAI-compatible HTTP API over loopback, in front of fake-engine
// workers.
#include "router/openai_http_server.h"

#include <string>
#include <vector>

#include "common/testing/http_client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "router/testing/local_cluster.h"

namespace memshare::router {
namespace {

using Json = nlohmann::json;
using memshare::testing::HttpRequest;
using memshare::testing::HttpResponse;
using testing::LocalCluster;
using testing::StreamResult;
using testing::TextRequest;

class OpenAiHttpServerTest : public ::testing::Test {
 protected:
  void Start(LocalCluster::Options o = {}) {
    o.http = true;
    cluster_ = std::make_unique<LocalCluster>(std::move(o));
  }
  HttpResponse Post(const std::string& path, const std::string& body,
                    const std::map<std::string, std::string>& headers = {}) {
    std::map<std::string, std::string> h = headers;
    h["Content-Type"] = "application/json";
    auto r = HttpRequest("127.0.0.1", cluster_->router().http_port(), "POST", path, body, h);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : HttpResponse();
  }
  HttpResponse Get(const std::string& path) {
    auto r = HttpRequest("127.0.0.1", cluster_->router().http_port(), "GET", path);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : HttpResponse();
  }
  // An OpenAI error body with this HTTP status; returns error.param.
  std::string ExpectError(const HttpResponse& r, int status) {
    EXPECT_EQ(r.status, status) << r.body;
    Json j = Json::parse(r.body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("error")) << r.body;
    if (!j.is_object() || !j.contains("error")) return "";
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    return j["error"]["param"].is_string() ? j["error"]["param"].get<std::string>() : "";
  }
  // The JSON payloads of an SSE body; `done` when it ended with [DONE].
  static std::vector<Json> Events(const std::string& body, bool* done) {
    std::vector<Json> out;
    *done = false;
    size_t pos = 0;
    while ((pos = body.find("data: ", pos)) != std::string::npos) {
      const size_t end = body.find("\n\n", pos);
      const std::string data = body.substr(pos + 6, end - pos - 6);
      if (data == "[DONE]") {
        *done = true;
      } else {
        out.push_back(Json::parse(data));
      }
      pos = end + 2;
    }
    return out;
  }

  std::unique_ptr<LocalCluster> cluster_;
};

TEST_F(OpenAiHttpServerTest, CompletionMatchesTheGrpcApi) {
  Start();
  const HttpResponse r = Post("/v1/completions",
                              R"({"model": "fake-model", "prompt": "Hello", "max_tokens": 16,
                                  "seed": 3})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers.at("content-type"), "application/json");
  const Json j = Json::parse(r.body);
  v1::GenerateRequest same = TextRequest("Hello", 16);
  same.mutable_sampling()->set_seed(3);
  const StreamResult grpc = cluster_->Generate(same);
  ASSERT_TRUE(grpc.status.ok());
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "fake-model");
  EXPECT_EQ(j["choices"][0]["text"], grpc.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 16);
  EXPECT_EQ(j["usage"]["total_tokens"], 21);
}

TEST_F(OpenAiHttpServerTest, StreamedCompletionIsServerSentEvents) {
  Start();
  const HttpResponse r =
      Post("/v1/completions", R"({"prompt": "Hello", "max_tokens": 12, "stream": true,
                                  "stream_options": {"include_usage": true}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers.at("content-type"), "text/event-stream");
  bool done;
  const std::vector<Json> events = Events(r.body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  std::string text;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    text += events[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text.size(), 12u);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 12);
}

TEST_F(OpenAiHttpServerTest, ChatCompletionsPlainAndStreamed) {
  Start();
  const std::string messages =
      R"("messages": [{"role": "system", "content": "brief"}, {"role": "user", "content": "hi"}])";
  const HttpResponse plain = Post("/v1/chat/completions", "{" + messages + R"(, "max_tokens": 7})");
  ASSERT_EQ(plain.status, 200) << plain.body;
  const Json j = Json::parse(plain.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  const std::string content = j["choices"][0]["message"]["content"];
  EXPECT_EQ(content.size(), 7u);

  const HttpResponse streamed =
      Post("/v1/chat/completions", "{" + messages + R"(, "max_tokens": 7, "stream": true})");
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  bool done;
  const std::vector<Json> events = Events(streamed.body, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string streamed_content;
  for (const Json& e : events) {
    const Json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) streamed_content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(streamed_content, content);  // same prompt, same (deterministic) tokens
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "length");
}

TEST_F(OpenAiHttpServerTest, ModelsAndHealth) {
  Start();
  const HttpResponse models = Get("/v1/models");
  ASSERT_EQ(models.status, 200);
  const Json j = Json::parse(models.body);
  EXPECT_EQ(j["data"][0]["id"], "fake-model");
  EXPECT_EQ(Get("/health").status, 200);
  cluster_->StopWorker(0);
  cluster_->StopWorker(1);
  ASSERT_TRUE(testing::Eventually([&] { return Get("/health").status == 503; }));
  // No worker: a request waits, then... the queue timeout is long; a
  // streamed request refused before any token still gets a plain status.
}

TEST_F(OpenAiHttpServerTest, BadInputGetsOpenAiErrorsAndServingGoesOn) {
  LocalCluster::Options o;
  o.router.http.max_body_bytes = 64 << 10;
  Start(o);
  EXPECT_EQ(ExpectError(Post("/v1/completions", "{not json"), 400), "body");
  EXPECT_EQ(ExpectError(Post("/v1/completions", "{\"prompt\": \"\xff\xfe\"}"), 400), "body");
  EXPECT_EQ(ExpectError(Post("/v1/completions", R"({"prompt": "x", "foo": 1})"), 400), "foo");
  EXPECT_EQ(ExpectError(Post("/v1/completions", R"({"prompt": "x", "max_tokens": "5"})"), 400),
            "max_tokens");
  EXPECT_EQ(ExpectError(Post("/v1/completions", R"({"prompt": ""})"), 400), "prompt");
  // Checked by the worker: the router passes its error through.
  EXPECT_EQ(
      ExpectError(Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2000000000})"), 400),
      "sampling.max_tokens");
  EXPECT_EQ(ExpectError(Post("/v1/completions",
                             R"({"prompt": "x", "max_tokens": 2000000000, "stream": true})"),
                        400),
            "sampling.max_tokens");
  std::string ids = "[1";
  for (int i = 0; i < 5000; ++i) ids += ",1";
  ids += "]";
  EXPECT_EQ(ExpectError(Post("/v1/completions", "{\"prompt\": " + ids + "}"), 400),
            "token_ids.ids");
  ExpectError(Post("/v1/completions", "{\"prompt\": \"" + std::string(70 << 10, 'x') + "\"}"), 413);
  EXPECT_EQ(ExpectError(Post("/v1/completions", R"({"prompt": "x", "model": "gpt-9"})"), 404),
            "model");
  EXPECT_EQ(ExpectError(Post("/v1/chat/completions", R"({"messages": [{"role": "user"}]})"), 400),
            "messages[0].content");
  ExpectError(Post("/v1/nothing", "{}"), 404);
  ExpectError(Get("/v1/completions"), 405);
  ExpectError(Post("/v1/models", "{}"), 405);
  const HttpResponse ok = Post("/v1/completions", R"({"prompt": "still here", "max_tokens": 3})");
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST_F(OpenAiHttpServerTest, WorkerRefusalsBecomeHttpStatuses) {
  Start();
  cluster_->engine(0).SetSubmitError(absl::ResourceExhaustedError("engine queue is full"));
  cluster_->engine(1).SetSubmitError(absl::ResourceExhaustedError("engine queue is full"));
  ExpectError(Post("/v1/completions", R"({"prompt": "x", "stream": true})"), 429);
  ExpectError(Post("/v1/completions", R"({"prompt": "x"})"), 429);
}

TEST_F(OpenAiHttpServerTest, ApiKeys) {
  LocalCluster::Options o;
  o.router.api_keys = {"sk-http"};
  Start(o);
  EXPECT_EQ(ExpectError(Post("/v1/completions", R"({"prompt": "x"})"), 401), "");
  EXPECT_EQ(Get("/v1/models").status, 401);
  EXPECT_EQ(Get("/health").status, 200);
  const HttpResponse ok = Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})",
                               {{"Authorization", "Bearer sk-http"}});
  EXPECT_EQ(ok.status, 200) << ok.body;
}

}  // namespace
}  // namespace memshare::router
