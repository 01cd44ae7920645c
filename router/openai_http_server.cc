#include "router/openai_http_server.h"

#include <civetweb.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "common/listener_wakeup.h"
#include "router/openai_api.h"

namespace memshare::router {
namespace {

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 499:
      return "Client Closed Request";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Internal Server Error";
  }
}

void SendJson(mg_connection* conn, int status, const std::string& body) {
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            status, Reason(status), body.size());
  mg_write(conn, body.data(), body.size());
}

void SendError(mg_connection* conn, const absl::Status& status, int http_status = 0) {
  SendJson(conn, http_status != 0 ? http_status : openai::HttpStatusFor(status.code()),
           openai::ErrorJson(status));
}

// The client's end of a Router::Call, drained by the handler's thread.
class HttpSink final : public ResponseSink {
 public:
  HttpSink(mg_connection* conn, const openai::ParsedRequest& request, std::string id)
      : conn_(conn),
        stream_(request.stream),
        builder_(request, std::move(id), absl::ToUnixSeconds(absl::Now())) {}

  void SinkWrite(const v1::GenerateResponse& message) override {
    absl::MutexLock lock(&mu_);
    pending_ = &message;
  }
  void SinkFinish(const grpc::Status& status) override {
    absl::MutexLock lock(&mu_);
    finish_ = status;
  }

  // Writes what the call sends until it finishes. Returns the HTTP status.
  int Run(const Router::CallPtr& call) {
    while (true) {
      const v1::GenerateResponse* message = nullptr;
      std::optional<grpc::Status> finish;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return pending_ != nullptr || finish_.has_value();
        };
        mu_.Await(absl::Condition(&ready));
        if (pending_ != nullptr) {
          message = pending_;
          pending_ = nullptr;
        } else {
          finish = finish_;
        }
      }
      if (message != nullptr) {
        bool ok = true;
        if (stream_) {
          const std::string events = builder_.StreamEvents(*message);
          if (!events.empty()) ok = SendChunk(events);
        } else {
          builder_.Collect(*message);
        }
        call->OnSinkWriteDone(ok);
        continue;
      }
      return End(FromGrpcStatus(*finish));
    }
  }

 private:
  bool SendChunk(const std::string& data) {
    if (!headers_sent_) {
      headers_sent_ = true;
      mg_printf(conn_,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    }
    return mg_send_chunk(conn_, data.data(), static_cast<unsigned int>(data.size())) > 0;
  }

  int End(const absl::Status& status) {
    if (!stream_) {
      if (!status.ok()) {
        SendError(conn_, status);
        return openai::HttpStatusFor(status.code());
      }
      SendJson(conn_, 200, builder_.Body());
      return 200;
    }
    if (!headers_sent_ && !status.ok()) {
      SendError(conn_, status);
      return openai::HttpStatusFor(status.code());
    }
    SendChunk(status.ok() ? builder_.StreamEnd() : openai::ResponseBuilder::StreamError(status));
    mg_send_chunk(conn_, "", 0);
    return 200;
  }

  mg_connection* const conn_;
  const bool stream_;
  openai::ResponseBuilder builder_;  // used by the handler's thread only
  bool headers_sent_ = false;
  absl::Mutex mu_;
  const v1::GenerateResponse* pending_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiHttpServer>> OpenAiHttpServer::Create(
    const Options& options, Router* router, WorkerRegistry* registry, const ApiKeys* keys,
    ServingMetrics* serving_metrics, RouterMetrics* router_metrics) {
  if (options.threads < 1 || options.max_body_bytes < 1024) {
    return absl::InvalidArgumentError("http: threads >= 1 and max_body_bytes >= 1024 required");
  }
  auto server = std::unique_ptr<OpenAiHttpServer>(
      new OpenAiHttpServer(options, router, registry, keys, serving_metrics, router_metrics));
  mg_init_library(0);
  const std::string threads = std::to_string(options.threads);
  const char* civet_options[] = {"listening_ports", options.address.c_str(), "num_threads",
                                 threads.c_str(), nullptr};
  mg_callbacks callbacks{};
  server->context_ = mg_start(&callbacks, nullptr, civet_options);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", options.address));
  }
  mg_server_port listening[4];
  const int n = mg_get_server_ports(server->context_, 4, listening);
  if (n < 1) return absl::UnavailableError("http: no listening port");
  server->port_ = listening[0].port;
  mg_set_request_handler(server->context_, "/", &OpenAiHttpServer::HandleRequest, server.get());
  return server;
}

OpenAiHttpServer::OpenAiHttpServer(const Options& options, Router* router, WorkerRegistry* registry,
                                   const ApiKeys* keys, ServingMetrics* serving_metrics,
                                   RouterMetrics* router_metrics)
    : options_(options),
      router_(router),
      registry_(registry),
      keys_(keys),
      serving_metrics_(serving_metrics),
      router_metrics_(router_metrics) {}

OpenAiHttpServer::~OpenAiHttpServer() {
  if (context_ == nullptr) return;
  StopAndWake(options_.address, port_, [this] { mg_stop(context_); });
}

int OpenAiHttpServer::HandleRequest(mg_connection* conn, void* self) {
  return static_cast<OpenAiHttpServer*>(self)->Handle(conn);
}

int OpenAiHttpServer::Handle(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string uri = info->local_uri != nullptr ? info->local_uri : "";
  const std::string method = info->request_method != nullptr ? info->request_method : "";
  const bool generate = uri == "/v1/completions" || uri == "/v1/chat/completions";
  if (uri == "/health") {
    bool any = false;
    for (const WorkerPtr& w : registry_->workers()) any = any || w->eligible();
    if (draining_.load() || !any) {
      SendJson(conn, 503,
               absl::StrCat("{\"status\":\"", draining_.load() ? "draining" : "no healthy worker",
                            "\"}"));
      return 503;
    }
    SendJson(conn, 200, "{\"status\":\"ok\"}");
    return 200;
  }
  if (!generate && uri != "/v1/models") {
    SendError(conn, absl::NotFoundError(absl::StrCat("path: no route ", uri)));
    return 404;
  }
  if ((generate && method != "POST") || (!generate && method != "GET")) {
    SendError(conn,
              absl::InvalidArgumentError(
                  absl::StrCat("method: ", uri, " takes ", generate ? "POST" : "GET")),
              405);
    return 405;
  }
  const char* authorization = mg_get_header(conn, "Authorization");
  if (absl::Status auth =
          keys_ != nullptr ? keys_->Check(authorization ? authorization : "") : absl::OkStatus();
      !auth.ok()) {
    if (router_metrics_) router_metrics_->RecordRejected("unauthenticated");
    if (serving_metrics_) serving_metrics_->RecordRequestEnd(auth.code());
    SendError(conn, auth);
    return 401;
  }
  if (!generate) {
    SendJson(conn, 200,
             openai::ModelsJson(registry_->model_info().value_or(v1::ModelInfo()),
                                absl::ToUnixSeconds(absl::Now())));
    return 200;
  }
  return HandleGenerate(conn, uri == "/v1/chat/completions");
}

int OpenAiHttpServer::HandleGenerate(mg_connection* conn, bool chat) {
  const mg_request_info* info = mg_get_request_info(conn);
  auto refuse = [&](const absl::Status& status, int http_status = 0) {
    if (serving_metrics_) serving_metrics_->RecordRequestEnd(status.code());
    SendError(conn, status, http_status);
    return http_status != 0 ? http_status : openai::HttpStatusFor(status.code());
  };
  if (draining_.load()) {
    if (router_metrics_) router_metrics_->RecordRejected("draining");
    return refuse(absl::UnavailableError("router is draining"));
  }
  if (info->content_length > options_.max_body_bytes) {
    return refuse(absl::InvalidArgumentError(
                      absl::StrCat("body: larger than ", options_.max_body_bytes, " bytes")),
                  413);
  }
  std::string body;
  char buffer[16384];
  while (true) {
    const int n = mg_read(conn, buffer, sizeof(buffer));
    if (n <= 0) break;
    body.append(buffer, static_cast<size_t>(n));
    if (static_cast<int64_t>(body.size()) > options_.max_body_bytes) {
      return refuse(absl::InvalidArgumentError(
                        absl::StrCat("body: larger than ", options_.max_body_bytes, " bytes")),
                    413);
    }
  }
  std::string served_model;
  if (std::optional<v1::ModelInfo> model = registry_->model_info(); model.has_value()) {
    served_model = model->model_id();
  }
  absl::StatusOr<openai::ParsedRequest> parsed = openai::ParseRequest(
      chat ? openai::Endpoint::kChatCompletions : openai::Endpoint::kCompletions, body,
      served_model);
  if (!parsed.ok()) return refuse(parsed.status());

  const absl::Time deadline = options_.request_timeout > absl::ZeroDuration()
                                  ? absl::Now() + options_.request_timeout
                                  : absl::InfiniteFuture();
  v1::GenerateRequest request = parsed->request;
  if (request.request_id().empty()) {
    request.set_request_id(absl::StrCat("http-", next_id_.fetch_add(1) + 1));
  }
  HttpSink sink(conn, *parsed, absl::StrCat(chat ? "chatcmpl-" : "cmpl-", request.request_id()));
  Router::CallPtr call = router_->Start(std::move(request), deadline, &sink);
  return sink.Run(call);
}

}  // namespace memshare::router
