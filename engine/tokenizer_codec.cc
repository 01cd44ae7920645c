#include "engine/tokenizer_codec.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/incremental_decoder.h"

namespace memshare::engine {
namespace {

class DecoderStream : public TokenTextStream {
 public:
  explicit DecoderStream(const tokenizer::Tokenizer* t)
      : decoder_(t, tokenizer::IncrementalDecoder::Options{}) {}
  std::string Append(int32_t token_id) override { return decoder_.Add(token_id); }
  std::string Flush() override { return decoder_.Flush(); }

 private:
  tokenizer::IncrementalDecoder decoder_;
};

// The "eos_token_id" of a JSON file (an id or a list of ids); nothing when
// the file or the field is missing or malformed (the field is optional).
std::vector<int32_t> EosIdsOf(const std::string& path) {
  std::ifstream file(path);
  if (!file) return {};
  std::stringstream text;
  text << file.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("eos_token_id")) return {};
  const nlohmann::json& e = j["eos_token_id"];
  std::vector<int32_t> ids;
  if (e.is_number_integer()) ids.push_back(e.get<int32_t>());
  if (e.is_array()) {
    for (const auto& v : e) {
      if (v.is_number_integer()) ids.push_back(v.get<int32_t>());
    }
  }
  return ids;
}

}  // namespace

std::vector<int32_t> ModelEosTokenIds(const std::string& model_dir) {
  std::vector<int32_t> ids;
  for (const char* file : {"/generation_config.json", "/config.json"}) {
    for (int32_t id : EosIdsOf(model_dir + file)) {
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
  }
  return ids;
}

absl::StatusOr<std::unique_ptr<TokenizerCodec>> TokenizerCodec::Create(const Options& options) {
  auto codec = std::unique_ptr<TokenizerCodec>(new TokenizerCodec());
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> t =
      tokenizer::Tokenizer::FromDirectory(options.model_dir);
  if (!t.ok()) return t.status();
  codec->tokenizer_ = std::move(*t);

  absl::StatusOr<std::unique_ptr<tokenizer::ChatTemplate>> chat =
      tokenizer::ChatTemplate::FromDirectory(options.model_dir);
  if (chat.ok()) {
    codec->chat_template_ = std::move(*chat);
  } else {
    codec->chat_template_error_ = std::string(chat.status().message());
  }

  std::vector<int32_t> eos = ModelEosTokenIds(options.model_dir);
  if (codec->tokenizer_->eos_id().has_value()) eos.push_back(*codec->tokenizer_->eos_id());
  const int32_t vocab = codec->tokenizer_->vocab_size();
  for (int32_t id : eos) {
    if (id >= 0 && id < vocab &&
        std::find(codec->eos_.begin(), codec->eos_.end(), id) == codec->eos_.end()) {
      codec->eos_.push_back(id);
    }
  }
  return codec;
}

absl::StatusOr<std::vector<int32_t>> TokenizerCodec::EncodePrompt(absl::string_view text) const {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text, /*add_special_tokens=*/true);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_text: ", ids.status().message()));
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> TokenizerCodec::EncodeChat(
    absl::Span<const ChatMessage> messages) const {
  if (chat_template_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages: the model has no usable chat template (", chat_template_error_,
                     "); send prompt_text or prompt_token_ids"));
  }
  std::vector<tokenizer::ChatMessage> converted;
  converted.reserve(messages.size());
  for (const ChatMessage& m : messages) converted.push_back({m.role, m.content, std::nullopt});
  absl::StatusOr<std::string> text =
      chat_template_->Render(converted, tokenizer::ChatTemplate::RenderOptions{});
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("messages: ", text.status().message()));
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      tokenizer_->Encode(*text, /*add_special_tokens=*/false);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("messages: ", ids.status().message()));
  }
  return ids;
}

std::unique_ptr<TokenTextStream> TokenizerCodec::NewStream(absl::Span<const int32_t>) const {
  return std::make_unique<DecoderStream>(tokenizer_.get());
}

std::string TokenizerCodec::TokenPiece(int32_t token_id) const {
  return std::string(tokenizer_->TokenPiece(token_id));
}

}  // namespace memshare::engine
