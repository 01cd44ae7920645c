// Small tokenizer files for unit tests, built in code so every id is known.
#ifndef MEMSHARE_ENGINE_TOKENIZER_TEST_TOKENIZERS_H_
#define MEMSHARE_ENGINE_TOKENIZER_TEST_TOKENIZERS_H_

#include <nlohmann/json.hpp>

namespace memshare::tokenizer::testing {

// Qwen2-style byte-level BPE: NFC, the Qwen Split regex + ByteLevel, ChatML
// special tokens. Ids: byte b is token id b (its byte-level character);
// then the merges below, in order:
//   256 "Ġt"  257 "he"  258 "Ġthe"  259 "ll"  260 "hell"  261 "hello"
//   262 "ĠĠ"  263 "bc"  264 "ab"    265 first two bytes of 你  266 "你"
//   267 "Ġhello"
// Added: 300 <|endoftext|>, 301 <|im_start|>, 302 <|im_end|> (special),
//        303 <think>, 304 </think> (not special).
nlohmann::json ByteLevelTokenizerJson();
// eos <|im_end|>, pad <|endoftext|>, the ChatML chat template of Qwen2.5
// (default system prompt "You are a helpful assistant.").
nlohmann::json ByteLevelConfigJson();

// Llama-2-style SentencePiece BPE: Prepend/Replace normalizer, no
// pre-tokenizer, byte fallback, <s> added by the post-processor.
// Ids: 0 <unk>, 1 <s>, 2 </s> (special); 3 + b for <0xbb>; then
//   259 "▁"  260 "h" 261 "e" 262 "l" 263 "o" 264 "w" 265 "r" 266 "d"
//   267 "▁h" 268 "ll" 269 "▁he" 270 "▁hell" 271 "▁hello" 272 "▁w" 273 "or"
//   274 "▁wor" 275 "▁worl" 276 "▁world"
// Merges are in the legacy "left right" string format.
nlohmann::json ByteFallbackTokenizerJson();
nlohmann::json ByteFallbackConfigJson();

}  // namespace memshare::tokenizer::testing

#endif  // MEMSHARE_ENGINE_TOKENIZER_TEST_TOKENIZERS_H_
