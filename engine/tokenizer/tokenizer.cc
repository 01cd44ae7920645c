#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "engine/tokenizer/internal/added_vocabulary.h"
#include "engine/tokenizer/internal/bpe_model.h"
#include "engine/tokenizer/internal/decoder.h"
#include "engine/tokenizer/internal/json_util.h"
#include "engine/tokenizer/internal/normalizer.h"
#include "engine/tokenizer/internal/pre_tokenizer.h"
#include "engine/tokenizer/internal/utf8.h"

namespace memshare::tokenizer {

using internal::Json;

namespace {

// Ids above this are rejected: a typo in a file must not allocate gigabytes.
constexpr int64_t kMaxTokenId = (1 << 24) - 1;

absl::Status ParseMerges(const Json& merges,
                         std::vector<std::pair<std::string, std::string>>* out) {
  if (!merges.is_array()) return absl::InvalidArgumentError("model.merges must be an array");
  out->reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& m = merges[i];
    if (m.is_string()) {
      // Legacy format "left right".
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 >= s.size() ||
          s.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model.merges[", i, "] \"", s, "\" is not two tokens separated by one space"));
      }
      out->emplace_back(s.substr(0, space), s.substr(space + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out->emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("model.merges[", i, "] must be a string or a pair of strings"));
    }
  }
  return absl::OkStatus();
}

// A token name in tokenizer_config.json: a string, or {"content": "..."}.
absl::StatusOr<std::optional<std::string>> ConfigTokenName(const Json& config, const char* key) {
  const Json* v = internal::FindMember(config, key);
  if (v == nullptr) return std::optional<std::string>();
  if (v->is_string()) return std::optional<std::string>(v->get<std::string>());
  if (v->is_object()) {
    std::string content;
    if (absl::Status s =
            internal::GetString(*v, "content", absl::StrCat("tokenizer_config.", key), &content);
        !s.ok()) {
      return s;
    }
    return std::optional<std::string>(std::move(content));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tokenizer_config.", key, " must be a string or an object"));
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& directory) {
  Options options;
  options.directory = directory;
  return Create(options);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Create(const Options& options) {
  std::string tokenizer_json = options.tokenizer_json;
  std::string config_json = options.tokenizer_config_json;
  if (!options.directory.empty()) {
    auto t = internal::ReadFile(options.directory + "/tokenizer.json");
    if (!t.ok()) return t.status();
    tokenizer_json = std::move(*t);
    auto c = internal::ReadFile(options.directory + "/tokenizer_config.json");
    if (c.ok()) {
      config_json = std::move(*c);
    } else if (!absl::IsNotFound(c.status())) {
      return c.status();
    } else {
      config_json.clear();
    }
  }
  if (tokenizer_json.empty()) {
    return absl::InvalidArgumentError("no tokenizer.json given (directory and contents empty)");
  }
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  if (absl::Status s = tokenizer->Load(tokenizer_json, config_json, options.word_cache_capacity);
      !s.ok()) {
    return s;
  }
  return tokenizer;
}

absl::Status Tokenizer::Load(const std::string& tokenizer_json, const std::string& config_text,
                             size_t word_cache_capacity) {
  auto parsed = internal::ParseJson(tokenizer_json, "tokenizer.json");
  if (!parsed.ok()) return parsed.status();
  const Json& root = *parsed;
  if (!root.is_object()) return absl::InvalidArgumentError("tokenizer.json: expected an object");

  // --- model ---
  const Json* model = internal::FindMember(root, "model");
  if (model == nullptr || !model->is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: missing object field \"model\"");
  }
  std::string type = "BPE";
  if (absl::Status s = internal::GetOptionalString(*model, "type", "model", &type); !s.ok()) {
    return s;
  }
  if (type != "BPE") {
    return absl::UnimplementedError(
        absl::StrCat("model type \"", type, "\" is not supported (only BPE)"));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    std::string affix;
    if (absl::Status s = internal::GetOptionalString(*model, key, "model", &affix); !s.ok()) {
      return s;
    }
    if (!affix.empty()) {
      return absl::UnimplementedError(absl::StrCat("model.", key, " is not supported"));
    }
  }
  internal::BpeModel::Options bpe;
  bpe.cache_capacity = word_cache_capacity;
  const Json* vocab = internal::FindMember(*model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return absl::InvalidArgumentError("model: missing object field \"vocab\"");
  }
  bpe.vocab.reserve(vocab->size());
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it.value().is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab[\"", it.key(), "\"] must be an integer"));
    }
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id > kMaxTokenId) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab[\"", it.key(), "\"] = ", id, " is out of range"));
    }
    if (!internal::IsValidUtf8(it.key())) {
      return absl::InvalidArgumentError("model.vocab has a token that is not UTF-8");
    }
    bpe.vocab.emplace(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  if (const Json* merges = internal::FindMember(*model, "merges"); merges != nullptr) {
    if (absl::Status s = ParseMerges(*merges, &bpe.merges); !s.ok()) return s;
  }
  for (auto [key, field] :
       {std::pair{"fuse_unk", &bpe.fuse_unk}, std::pair{"byte_fallback", &bpe.byte_fallback},
        std::pair{"ignore_merges", &bpe.ignore_merges}}) {
    if (absl::Status s = internal::GetOptionalBool(*model, key, "model", field); !s.ok()) return s;
  }
  std::string unk;
  if (absl::Status s = internal::GetOptionalString(*model, "unk_token", "model", &unk); !s.ok()) {
    return s;
  }

  // --- added tokens ---
  std::vector<internal::AddedToken> added;
  if (const Json* list = internal::FindMember(root, "added_tokens"); list != nullptr) {
    if (!list->is_array()) return absl::InvalidArgumentError("added_tokens must be an array");
    for (size_t i = 0; i < list->size(); ++i) {
      const Json& item = (*list)[i];
      const std::string where = absl::StrCat("added_tokens[", i, "]");
      if (!item.is_object()) return absl::InvalidArgumentError(where + " must be an object");
      internal::AddedToken t;
      int64_t id = 0;
      if (absl::Status s = internal::GetInt(item, "id", where, &id); !s.ok()) return s;
      if (id < 0 || id > kMaxTokenId) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".id ", id, " is out of range"));
      }
      t.id = static_cast<int32_t>(id);
      if (absl::Status s = internal::GetString(item, "content", where, &t.content); !s.ok()) {
        return s;
      }
      for (auto [key, field] :
           {std::pair{"special", &t.special}, std::pair{"single_word", &t.single_word},
            std::pair{"lstrip", &t.lstrip}, std::pair{"rstrip", &t.rstrip},
            std::pair{"normalized", &t.normalized}}) {
        if (absl::Status s = internal::GetOptionalBool(item, key, where, field); !s.ok()) return s;
      }
      max_id = std::max(max_id, id);
      added.push_back(std::move(t));
    }
  }

  // --- id tables ---
  id_to_token_.assign(max_id + 1, std::string());
  has_token_.assign(max_id + 1, false);
  special_.assign(max_id + 1, false);
  for (const auto& [token, id] : bpe.vocab) {
    id_to_token_[id] = token;
    has_token_[id] = true;
  }
  for (const auto& t : added) {
    id_to_token_[t.id] = t.content;
    has_token_[t.id] = true;
    special_[t.id] = t.special;
    has_normalized_added_tokens_ |= t.normalized;
    added_ids_[t.content] = t.id;
  }
  if (!unk.empty()) {
    auto it = bpe.vocab.find(unk);
    if (it == bpe.vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.unk_token \"", unk, "\" is not in the vocab"));
    }
    bpe.unk_id = it->second;
  }
  auto model_or = internal::BpeModel::Create(std::move(bpe));
  if (!model_or.ok()) return model_or.status();
  model_ = std::move(*model_or);
  auto added_or = internal::AddedVocabulary::Create(std::move(added));
  if (!added_or.ok()) return added_or.status();
  added_ = std::move(*added_or);

  // --- normalizer, pre-tokenizer, decoder ---
  if (const Json* n = internal::FindMember(root, "normalizer"); n != nullptr) {
    auto normalizer = internal::Normalizer::FromJson(*n);
    if (!normalizer.ok()) return normalizer.status();
    normalizer_ = std::move(*normalizer);
  }
  if (const Json* p = internal::FindMember(root, "pre_tokenizer"); p != nullptr) {
    auto pre = internal::PreTokenizer::FromJson(*p);
    if (!pre.ok()) return pre.status();
    pre_tokenizer_ = std::move(*pre);
  }
  auto decoder = internal::Decoder::FromJson(internal::FindMember(root, "decoder"));
  if (!decoder.ok()) return decoder.status();
  decoder_ = std::move(*decoder);
  token_bytes_.assign(id_to_token_.size(), std::string());
  for (size_t id = 0; id < id_to_token_.size(); ++id) {
    if (has_token_[id]) token_bytes_[id] = decoder_->TokenBytes(id_to_token_[id]);
  }

  // --- post-processor (single sequence) ---
  std::function<absl::Status(const Json&)> add_processor = [&](const Json& pp) -> absl::Status {
    std::string pp_type;
    if (absl::Status s = internal::GetString(pp, "type", "post_processor", &pp_type); !s.ok()) {
      return s;
    }
    std::vector<int32_t> prefix, suffix;
    if (pp_type == "ByteLevel") return absl::OkStatus();
    if (pp_type == "Sequence") {
      const Json* list = internal::FindMember(pp, "processors");
      if (list == nullptr || !list->is_array()) {
        return absl::InvalidArgumentError("post_processor Sequence: missing array \"processors\"");
      }
      for (const Json& item : *list) {
        if (absl::Status s = add_processor(item); !s.ok()) return s;
      }
      return absl::OkStatus();
    }
    if (pp_type == "TemplateProcessing") {
      const Json* single = internal::FindMember(pp, "single");
      const Json* specials = internal::FindMember(pp, "special_tokens");
      if (single == nullptr || !single->is_array()) {
        return absl::InvalidArgumentError("post_processor: missing array \"single\"");
      }
      bool seen_sequence = false;
      for (const Json& item : *single) {
        if (const Json* seq = internal::FindMember(item, "Sequence"); seq != nullptr) {
          std::string which;
          if (absl::Status s = internal::GetString(*seq, "id", "post_processor", &which); !s.ok()) {
            return s;
          }
          if (which != "A" || seen_sequence) {
            return absl::InvalidArgumentError("post_processor: single template must hold $A once");
          }
          seen_sequence = true;
          continue;
        }
        const Json* sp = internal::FindMember(item, "SpecialToken");
        if (sp == nullptr) {
          return absl::InvalidArgumentError("post_processor: unknown template item");
        }
        std::string name;
        if (absl::Status s = internal::GetString(*sp, "id", "post_processor", &name); !s.ok()) {
          return s;
        }
        const Json* entry =
            specials == nullptr ? nullptr : internal::FindMember(*specials, name.c_str());
        const Json* ids = entry == nullptr ? nullptr : internal::FindMember(*entry, "ids");
        if (ids == nullptr || !ids->is_array()) {
          return absl::InvalidArgumentError(
              absl::StrCat("post_processor: special token \"", name, "\" has no ids"));
        }
        for (const Json& id : *ids) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
              id.get<int64_t>() >= static_cast<int64_t>(id_to_token_.size())) {
            return absl::InvalidArgumentError(
                absl::StrCat("post_processor: bad id for special token \"", name, "\""));
          }
          (seen_sequence ? suffix : prefix).push_back(id.get<int32_t>());
        }
      }
      if (!seen_sequence) {
        return absl::InvalidArgumentError("post_processor: single template lacks $A");
      }
    } else if (pp_type == "RobertaProcessing" || pp_type == "BertProcessing") {
      for (auto [key, out] : {std::pair{"cls", &prefix}, std::pair{"sep", &suffix}}) {
        const Json* v = internal::FindMember(pp, key);
        if (v == nullptr || !v->is_array() || v->size() != 2 || !(*v)[1].is_number_integer() ||
            (*v)[1].get<int64_t>() < 0 ||
            (*v)[1].get<int64_t>() >= static_cast<int64_t>(id_to_token_.size())) {
          return absl::InvalidArgumentError(absl::StrCat("post_processor: bad \"", key, "\""));
        }
        out->push_back((*v)[1].get<int32_t>());
      }
    } else {
      return absl::UnimplementedError(
          absl::StrCat("unsupported post_processor type \"", pp_type, "\""));
    }
    // Each processor wraps what the previous ones produced.
    prefix.insert(prefix.end(), prefix_ids_.begin(), prefix_ids_.end());
    prefix_ids_ = std::move(prefix);
    suffix_ids_.insert(suffix_ids_.end(), suffix.begin(), suffix.end());
    return absl::OkStatus();
  };
  if (const Json* pp = internal::FindMember(root, "post_processor"); pp != nullptr) {
    if (absl::Status s = add_processor(*pp); !s.ok()) return s;
  }

  // --- tokenizer_config.json ---
  Json config = Json::object();
  if (!config_text.empty()) {
    auto c = internal::ParseJson(config_text, "tokenizer_config.json");
    if (!c.ok()) return c.status();
    if (!c->is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json: expected an object");
    }
    config = std::move(*c);
  }
  config_json_ = config.dump();
  std::optional<std::string> bos, eos, pad;
  for (auto [key, out] :
       {std::pair{"bos_token", &bos}, std::pair{"eos_token", &eos}, std::pair{"pad_token", &pad}}) {
    auto name = ConfigTokenName(config, key);
    if (!name.ok()) return name.status();
    *out = std::move(*name);
  }
  auto lookup = [this](const std::optional<std::string>& name) -> std::optional<int32_t> {
    if (!name.has_value()) return std::nullopt;
    return TokenToId(*name);
  };
  bos_id_ = lookup(bos);
  eos_id_ = lookup(eos);
  pad_id_ = lookup(pad);

  // transformers' Llama-family fast tokenizers rebuild the post-processor from
  // add_bos_token / add_eos_token (LlamaTokenizerFast.update_post_processor),
  // which is how e.g. DeepSeek-R1-Distill gets its BOS.
  std::string tokenizer_class;
  if (absl::Status s = internal::GetOptionalString(config, "tokenizer_class", "tokenizer_config",
                                                   &tokenizer_class);
      !s.ok()) {
    return s;
  }
  static constexpr absl::string_view kLlamaClasses[] = {
      "LlamaTokenizer",         "LlamaTokenizerFast", "CodeLlamaTokenizer",
      "CodeLlamaTokenizerFast", "GemmaTokenizer",     "GemmaTokenizerFast"};
  if (std::find(std::begin(kLlamaClasses), std::end(kLlamaClasses), tokenizer_class) !=
      std::end(kLlamaClasses)) {
    bool add_bos = true, add_eos = false;
    if (absl::Status s =
            internal::GetOptionalBool(config, "add_bos_token", "tokenizer_config", &add_bos);
        !s.ok()) {
      return s;
    }
    if (absl::Status s =
            internal::GetOptionalBool(config, "add_eos_token", "tokenizer_config", &add_eos);
        !s.ok()) {
      return s;
    }
    prefix_ids_.clear();
    suffix_ids_.clear();
    if (add_bos && bos_id_.has_value()) prefix_ids_.push_back(*bos_id_);
    if (add_eos && eos_id_.has_value()) suffix_ids_.push_back(*eos_id_);
  }
  return absl::OkStatus();
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
  return model_->TokenToId(token);
}

std::optional<absl::string_view> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !has_token_[id]) return std::nullopt;
  return absl::string_view(id_to_token_[id]);
}

bool Tokenizer::IsSpecial(int32_t id) const { return id >= 0 && id < vocab_size() && special_[id]; }

absl::string_view Tokenizer::TokenPiece(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !has_token_[id]) return {};
  return token_bytes_[id];
}

absl::Status Tokenizer::EncodeText(absl::string_view text, bool at_start,
                                   std::vector<int32_t>* ids) const {
  std::vector<internal::Piece> pieces;
  pieces.push_back({std::string(text), at_start});
  if (pre_tokenizer_ != nullptr) {
    if (absl::Status s = pre_tokenizer_->Apply(&pieces); !s.ok()) return s;
  }
  for (const internal::Piece& p : pieces) model_->Encode(p.text, ids);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       bool add_special_tokens) const {
  if (const size_t bad = internal::FirstInvalidUtf8Offset(text); bad != text.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (byte offset ", bad, ")"));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + prefix_ids_.size() + suffix_ids_.size() + 1);
  if (add_special_tokens) ids = prefix_ids_;
  std::vector<internal::Segment> segments;
  added_->Split(text, /*normalized=*/false, &segments);
  std::vector<internal::Segment> inner;
  for (const internal::Segment& seg : segments) {
    if (seg.token_id >= 0) {
      ids.push_back(seg.token_id);
      continue;
    }
    std::string piece(text.substr(seg.begin, seg.end - seg.begin));
    if (normalizer_ != nullptr) {
      if (absl::Status s = normalizer_->Normalize(&piece); !s.ok()) return s;
    }
    if (piece.empty()) continue;
    const bool at_start = seg.begin == 0;
    if (!has_normalized_added_tokens_) {
      if (absl::Status s = EncodeText(piece, at_start, &ids); !s.ok()) return s;
      continue;
    }
    inner.clear();
    added_->Split(piece, /*normalized=*/true, &inner);
    for (const internal::Segment& sub : inner) {
      if (sub.token_id >= 0) {
        ids.push_back(sub.token_id);
        continue;
      }
      if (absl::Status s =
              EncodeText(absl::string_view(piece).substr(sub.begin, sub.end - sub.begin),
                         at_start && sub.begin == 0, &ids);
          !s.ok()) {
        return s;
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::string bytes;
  bool first = true;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || !has_token_[id]) continue;
    if (skip_special_tokens && special_[id]) continue;
    if (first && decoder_->has_first_token_rule()) {
      bytes += decoder_->FirstTokenBytes(id_to_token_[id]);
    } else {
      bytes += token_bytes_[id];
    }
    first = false;
  }
  std::string text = internal::ToValidUtf8(bytes);
  internal::ApplyWholeTextStrip(*decoder_, &text);
  return text;
}

}  // namespace memshare::tokenizer
