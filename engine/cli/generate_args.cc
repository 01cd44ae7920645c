#include "engine/cli/generate_args.h"

#include <functional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace memshare::engine::cli {
namespace {

struct Flag {
  const char* name;   // without "--"
  const char* value;  // metavariable; nullptr for a switch
  const char* help;   // one or more lines
  std::function<absl::Status(const std::string& value, GenerateArgs* a)> set;
};

absl::Status Bad(const std::string& flag, const std::string& what, const std::string& got) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", what, ", got \"", got, "\""));
}

std::function<absl::Status(const std::string&, GenerateArgs*)> Int(
    const char* flag, std::function<int32_t*(GenerateArgs*)> field) {
  return [flag, field](const std::string& v, GenerateArgs* a) {
    int32_t x;
    if (!absl::SimpleAtoi(v, &x)) return Bad(flag, "expects an integer", v);
    *field(a) = x;
    return absl::OkStatus();
  };
}

std::function<absl::Status(const std::string&, GenerateArgs*)> Float(
    const char* flag, std::function<float*(GenerateArgs*)> field) {
  return [flag, field](const std::string& v, GenerateArgs* a) {
    float x;
    if (!absl::SimpleAtof(v, &x)) return Bad(flag, "expects a number", v);
    *field(a) = x;
    return absl::OkStatus();
  };
}

const std::vector<Flag>& Flags() {
  static const std::vector<Flag>* flags = new std::vector<Flag>{
      {"model", "DIR",
       "Hugging Face model directory (config.json, *.safetensors, tokenizer.json).",
       [](const std::string& v, GenerateArgs* a) {
         a->model_dir = v;
         return absl::OkStatus();
       }},
      {"load-format", "auto|dummy",
       "auto: weights from the safetensors files; dummy: random weights of the\n"
       "model's shapes (benchmarks). Default auto.",
       [](const std::string& v, GenerateArgs* a) {
         if (v != "auto" && v != "dummy") return Bad("load-format", "must be auto or dummy", v);
         a->load_format = v;
         return absl::OkStatus();
       }},
      {"prompt", "TEXT",
       "The prompt, sent as is (no chat template). One of --prompt, --prompt-file,\n"
       "--chat.",
       [](const std::string& v, GenerateArgs* a) {
         a->prompt = v;
         return absl::OkStatus();
       }},
      {"prompt-file", "FILE", "Read the prompt from FILE ('-' for stdin).",
       [](const std::string& v, GenerateArgs* a) {
         a->prompt_file = v;
         return absl::OkStatus();
       }},
      {"chat", nullptr,
       "Interactive chat: read user turns from stdin (one per line; an empty line\n"
       "or EOF ends), render the conversation with the model's chat template and\n"
       "stream each reply.",
       [](const std::string&, GenerateArgs* a) {
         a->chat = true;
         return absl::OkStatus();
       }},
      {"system", "TEXT", "System message at the start of a --chat conversation.",
       [](const std::string& v, GenerateArgs* a) {
         a->system_prompt = v;
         return absl::OkStatus();
       }},
      {"memshare", "on|off", "MemShare KV block sharing within the request. Default off.",
       [](const std::string& v, GenerateArgs* a) {
         if (v == "on") {
           a->memshare = MemShareParams::Mode::kOn;
         } else if (v == "off") {
           a->memshare = MemShareParams::Mode::kOff;
         } else {
           return Bad("memshare", "must be on or off", v);
         }
         return absl::OkStatus();
       }},
      {"tau-lex", "F", "MemShare lexical (MinHash Jaccard) threshold in [0, 1]. Default: server's.",
       [](const std::string& v, GenerateArgs* a) {
         float x;
         if (!absl::SimpleAtof(v, &x)) return Bad("tau-lex", "expects a number", v);
         a->tau_lex = x;
         return absl::OkStatus();
       }},
      {"tau-kv", "F", "MemShare K/V relative L2 distance threshold. Default: server's.",
       [](const std::string& v, GenerateArgs* a) {
         float x;
         if (!absl::SimpleAtof(v, &x)) return Bad("tau-kv", "expects a number", v);
         a->tau_kv = x;
         return absl::OkStatus();
       }},
      {"max-tokens", "N", "Most tokens to generate. Default 256.",
       Int("max-tokens", [](GenerateArgs* a) { return &a->sampling.max_tokens; })},
      {"temperature", "F", "Sampling temperature; 0 = greedy. Default 0.",
       Float("temperature", [](GenerateArgs* a) { return &a->sampling.temperature; })},
      {"top-k", "N", "Keep the N most likely tokens; 0 = off. Default 0.",
       Int("top-k", [](GenerateArgs* a) { return &a->sampling.top_k; })},
      {"top-p", "F", "Nucleus sampling mass in (0, 1]. Default 1.",
       Float("top-p", [](GenerateArgs* a) { return &a->sampling.top_p; })},
      {"min-p", "F", "Drop tokens below F x the top probability, in [0, 1]. Default 0.",
       Float("min-p", [](GenerateArgs* a) { return &a->sampling.min_p; })},
      {"repetition-penalty", "F", "> 0; 1 = off (prompt and generated tokens). Default 1.",
       Float("repetition-penalty", [](GenerateArgs* a) { return &a->sampling.repetition_penalty; })},
      {"presence-penalty", "F", "In [-2, 2], over generated tokens. Default 0.",
       Float("presence-penalty", [](GenerateArgs* a) { return &a->sampling.presence_penalty; })},
      {"frequency-penalty", "F", "In [-2, 2], over generated tokens. Default 0.",
       Float("frequency-penalty", [](GenerateArgs* a) { return &a->sampling.frequency_penalty; })},
      {"seed", "N", "Seed of the sampling RNG (reproducible sampling). Default: random.",
       [](const std::string& v, GenerateArgs* a) {
         uint64_t x;
         if (!absl::SimpleAtoi(v, &x)) return Bad("seed", "expects a non-negative integer", v);
         a->sampling.seed = x;
         return absl::OkStatus();
       }},
      {"stop", "TEXT", "Stop string (repeatable); it is not printed.",
       [](const std::string& v, GenerateArgs* a) {
         a->sampling.stop.push_back(v);
         return absl::OkStatus();
       }},
      {"stop-token-id", "ID", "Token id that ends generation (repeatable).",
       [](const std::string& v, GenerateArgs* a) {
         int32_t x;
         if (!absl::SimpleAtoi(v, &x)) return Bad("stop-token-id", "expects an integer", v);
         a->sampling.stop_token_ids.push_back(x);
         return absl::OkStatus();
       }},
      {"ignore-eos", nullptr, "Keep generating past EOS (until --max-tokens).",
       [](const std::string&, GenerateArgs* a) {
         a->sampling.ignore_eos = true;
         return absl::OkStatus();
       }},
      {"logprobs", "N", "Print the top-N logprobs of each generated token (0..20) on stderr.",
       Int("logprobs", [](GenerateArgs* a) { return &a->sampling.logprobs; })},
      {"max-model-len", "N", "Longest prompt + generation; 0 = the model's. Default 0.",
       Int("max-model-len", [](GenerateArgs* a) { return &a->max_model_len; })},
      {"block-size", "N", "Tokens per KV block. Default 8 (MemShare shares whole blocks).",
       Int("block-size", [](GenerateArgs* a) { return &a->block_size; })},
      {"num-blocks", "N", "KV blocks per layer group; 0 = from --kv-cache-mib. Default 0.",
       Int("num-blocks", [](GenerateArgs* a) { return &a->num_blocks; })},
      {"kv-cache-mib", "N", "Memory for the KV pool when --num-blocks is 0. Default 1024.",
       Int("kv-cache-mib", [](GenerateArgs* a) { return &a->kv_cache_mib; })},
      {"layer-groups", "N", "KV layer groups (MemShare decides per group). Default 1.",
       Int("layer-groups", [](GenerateArgs* a) { return &a->layer_groups; })},
      {"max-num-seqs", "N", "Most sequences in a batch. Default 16.",
       Int("max-num-seqs", [](GenerateArgs* a) { return &a->max_num_seqs; })},
      {"max-batched-tokens", "N", "Token budget of one step (chunked prefill). Default 2048.",
       Int("max-batched-tokens", [](GenerateArgs* a) { return &a->max_batched_tokens; })},
      {"threads", "N", "CPU threads for the model; 0 = every core. Default 0.",
       Int("threads", [](GenerateArgs* a) { return &a->threads; })},
      {"device", "auto|cpu|cuda",
       "Backend: cuda (the GPU), cpu, or auto = cuda when a CUDA device is usable,\n"
       "else cpu. Default auto.",
       [](const std::string& v, GenerateArgs* a) {
         if (v != "auto" && v != "cpu" && v != "cuda") {
           return Bad("device", "must be auto, cpu or cuda", v);
         }
         a->device = v;
         return absl::OkStatus();
       }},
      {"gpu-memory-utilization", "F",
       "CUDA: share of the GPU's memory in use once the KV pool is allocated\n"
       "(the pool takes what the weights and buffers leave; --num-blocks overrides).\n"
       "Default 0.9.",
       Float("gpu-memory-utilization",
             [](GenerateArgs* a) { return &a->gpu_memory_utilization; })},
      {"no-prefix-cache", nullptr, "Disable the prefix cache.",
       [](const std::string&, GenerateArgs* a) {
         a->prefix_cache = false;
         return absl::OkStatus();
       }},
      {"no-fuse-norms", nullptr,
       "CUDA: run the decode steps' RMSNorms as their own kernels with the checkpoint's\n"
       "weights, instead of in the GEMM epilogues with the norm weights folded into\n"
       "the next products' (the default: about 1% faster decode steps, one more bf16\n"
       "rounding of those weights).",
       [](const std::string&, GenerateArgs* a) {
         a->fuse_norms = false;
         return absl::OkStatus();
       }},
      {"no-async-scheduling", nullptr,
       "Run each step after the previous one's results are read, instead of\n"
       "submitting the next decode step while one runs with its tokens fed on the GPU\n"
       "(the default on one GPU; the same tokens, the GPU waiting for the host between\n"
       "steps).",
       [](const std::string&, GenerateArgs* a) {
         a->async_scheduling = false;
         return absl::OkStatus();
       }},
      {"quiet", nullptr, "No progress lines on stderr (the summary is still printed).",
       [](const std::string&, GenerateArgs* a) {
         a->quiet = true;
         return absl::OkStatus();
       }},
      {"help", nullptr, "This text.",
       [](const std::string&, GenerateArgs* a) {
         a->help = true;
         return absl::OkStatus();
       }},
  };
  return *flags;
}

}  // namespace

std::string GenerateUsage() {
  std::string out =
      "Usage: memshare generate --model DIR (--prompt TEXT | --prompt-file FILE | --chat)\n"
      "                         [--memshare on|off] [sampling and engine flags]\n"
      "\n"
      "Generates text with the CPU backend, streaming it to stdout. Progress goes to\n"
      "stderr, and at the end a summary line: prompt and generated tokens, tokens per\n"
      "second, KV blocks (peak physical / logical), blocks shared by MemShare and the\n"
      "bytes they saved.\n"
      "\n"
      "Flags (--flag VALUE or --flag=VALUE):\n";
  for (const Flag& f : Flags()) {
    std::string head = absl::StrCat("  --", f.name, f.value ? absl::StrCat(" ", f.value) : "");
    std::vector<std::string> lines = absl::StrSplit(f.help, '\n');
    if (head.size() < 28) {
      head.resize(28, ' ');
      absl::StrAppend(&out, head, lines[0], "\n");
    } else {
      absl::StrAppend(&out, head, "\n", std::string(28, ' '), lines[0], "\n");
    }
    for (size_t i = 1; i < lines.size(); ++i) {
      absl::StrAppend(&out, std::string(28, ' '), lines[i], "\n");
    }
  }
  return out;
}

absl::StatusOr<GenerateArgs> ParseGenerateArgs(absl::Span<const std::string> args) {
  GenerateArgs a;
  a.sampling.temperature = 0.0f;  // the CLI is greedy unless asked
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!absl::StartsWith(arg, "--")) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument \"", arg, "\" (flags start with --; see --help)"));
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Flag* flag = nullptr;
    for (const Flag& f : Flags()) {
      if (name == f.name) flag = &f;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (flag->value == nullptr) {
      if (value.has_value()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      value = "";
    } else if (!value.has_value()) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value ", flag->value));
      }
      value = args[++i];
    }
    if (absl::Status s = flag->set(*value, &a); !s.ok()) return s;
  }
  if (a.help) return a;

  if (a.model_dir.empty()) return absl::InvalidArgumentError("--model: is required");
  const int sources =
      (a.prompt.empty() ? 0 : 1) + (a.prompt_file.empty() ? 0 : 1) + (a.chat ? 1 : 0);
  if (sources != 1) {
    return absl::InvalidArgumentError("--prompt, --prompt-file, --chat: exactly one must be given");
  }
  if (!a.system_prompt.empty() && !a.chat) {
    return absl::InvalidArgumentError("--system: only with --chat");
  }
  auto positive = [](const char* flag, int32_t v) -> absl::Status {
    if (v < 1) return Bad(flag, "must be >= 1", absl::StrCat(v));
    return absl::OkStatus();
  };
  auto non_negative = [](const char* flag, int32_t v) -> absl::Status {
    if (v < 0) return Bad(flag, "must be >= 0", absl::StrCat(v));
    return absl::OkStatus();
  };
  for (absl::Status s :
       {positive("block-size", a.block_size), positive("layer-groups", a.layer_groups),
        positive("max-num-seqs", a.max_num_seqs),
        positive("max-batched-tokens", a.max_batched_tokens),
        positive("kv-cache-mib", a.kv_cache_mib), non_negative("num-blocks", a.num_blocks),
        non_negative("max-model-len", a.max_model_len), non_negative("threads", a.threads)}) {
    if (!s.ok()) return s;
  }
  if (!(a.gpu_memory_utilization > 0.f && a.gpu_memory_utilization <= 1.f)) {
    return Bad("gpu-memory-utilization", "must be in (0, 1]",
               absl::StrCat(a.gpu_memory_utilization));
  }
  return a;
}

}  // namespace memshare::engine::cli
