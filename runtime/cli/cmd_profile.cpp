// hetmoe profile -m MODEL -f PROMPTS -o stats.json [-n N]: runs a prompt set on the CPU path and saves how often
// each block's router chose each expert (placement/expert_stats.h); --merge a.json,b.json combines saved files.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

#include "placement/expert_stats.h"
#include "profiler/memory.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/cli_files.h"
#include "runtime/cli/cli_util.h"
#include "runtime/cli/commands.h"
#include "runtime/exec/forward_factory.h"
#include "runtime/model/model.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::cli {
namespace {

struct ProfileArgs {
  std::string model_path;
  std::string prompts_path;
  std::string output_path;
  std::vector<std::string> merge_paths;
  int num_decode = 0;
  int num_threads = default_num_threads();
  uint32_t context_length = 4096;
  std::string load = "auto";
};

/// One prompt per line; a line that starts with '{' is a JSON object with a "prompt" string. Empty lines skipped.
Expected<std::vector<std::string>> read_prompts(const std::string& path) {
  HETMOE_RETURN_IF_ERROR(check_input_file("-f", path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return make_error(ErrorCode::kIo, fmt::format("-f {}: cannot open", path));
  std::vector<std::string> prompts;
  std::string line;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line.front() == '{') {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
        return make_error(ErrorCode::kFormat,
                          fmt::format("{}:{}: a line starting with '{{' must be a JSON object with a \"prompt\" string",
                                      path, line_no));
      prompts.push_back(j["prompt"].get<std::string>());
    } else {
      prompts.push_back(line);
    }
  }
  if (prompts.empty()) return make_error(ErrorCode::kInvalidArgument, fmt::format("{}: no prompts", path));
  return prompts;
}

int run_merge(const ProfileArgs& args) {
  if (auto s = check_output_path("-o", args.output_path); !s) return report_error("profile", s.error());
  for (const std::string& path : args.merge_paths)
    if (auto s = check_input_file("--merge", path); !s) return report_error("profile", s.error());
  std::optional<placement::ExpertStats> merged;
  for (const std::string& path : args.merge_paths) {
    auto s = placement::expert_stats_load(path);
    if (!s) return report_error("profile", s.error());
    if (!merged) {
      merged = std::move(*s);
      continue;
    }
    auto m = placement::expert_stats_merge(*merged, *s);
    if (!m) return report_error("profile", make_error(m.error().code, path + ": " + m.error().message));
    merged = std::move(*m);
  }
  if (auto s = write_output_file("-o", args.output_path, placement::expert_stats_to_json(*merged).dump() + "\n"); !s)
    return report_error("profile", s.error());
  fmt::print(stderr, "merged {} files: {} tokens → {}\n", args.merge_paths.size(), merged->num_tokens,
             args.output_path);
  return 0;
}

int run_profile(const ProfileArgs& args) {
  if (!args.merge_paths.empty()) return run_merge(args);
  if (args.model_path.empty() || args.prompts_path.empty())
    return report_error("profile", make_error(ErrorCode::kInvalidArgument,
                                              "-m MODEL and -f PROMPTS are needed (or --merge FILES)"));
  if (auto s = check_output_path("-o", args.output_path); !s) return report_error("profile", s.error());
  if (auto s = check_input_file("-m", args.model_path); !s) return report_error("profile", s.error());
  auto prompts = read_prompts(args.prompts_path);
  if (!prompts) return report_error("profile", prompts.error());
  auto load_mode = parse_load_mode(args.load);
  if (!load_mode) return report_error("profile", load_mode.error());
  auto model = Model::load(args.model_path, *load_mode);
  if (!model) return report_error("profile", model.error());
  const ModelHparams& hp = model->hparams;
  auto tokenizer = Tokenizer::from_gguf(*model->file);
  if (!tokenizer) return report_error("profile", tokenizer.error());

  placement::ExpertStats stats = placement::ExpertStats::zeros(hp.num_layers, hp.num_experts, hp.num_experts_used);
  if (auto name = model->file->get_string("general.name"); name) stats.model_name = std::string(*name);
  ForwardOptions options;
  options.context_length = std::min(args.context_length, hp.context_length);
  options.num_threads = args.num_threads;
  options.repack_weights = true;  // the layout `generate` runs: the counts are those of the runs they plan for
  options.expert_counts = stats.counts.data();
  auto forward = create_forward(*model, options);
  if (!forward) return report_error("profile", forward.error());

  std::vector<float> logits(hp.vocab_size);  // (vocab_size)
  const double t0 = profiler::now_seconds();
  for (size_t i = 0; i < prompts->size(); ++i) {
    const std::vector<int32_t> ids = tokenizer->encode((*prompts)[i], /*parse_special=*/false);
    if (ids.empty()) continue;
    if (ids.size() + static_cast<size_t>(args.num_decode) > (*forward)->context_length())
      return report_error("profile", make_error(ErrorCode::kInvalidArgument,
                                                fmt::format("{}: prompt {} has {} tokens; with -n {} that exceeds the "
                                                            "context of {} (-c)",
                                                            args.prompts_path, i + 1, ids.size(), args.num_decode,
                                                            (*forward)->context_length())));
    (*forward)->reset();
    if (auto s = (*forward)->forward_batch(ids, logits); !s) return report_error("profile", s.error());
    stats.num_tokens += ids.size();
    for (int n = 0; n < args.num_decode; ++n) {  // greedy continuation
      const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      if (auto s = (*forward)->forward(next, logits); !s) return report_error("profile", s.error());
      ++stats.num_tokens;
    }
  }
  if (auto s = write_output_file("-o", args.output_path, placement::expert_stats_to_json(stats).dump() + "\n"); !s)
    return report_error("profile", s.error());
  fmt::print(stderr, "profiled {} prompts, {} tokens in {:.2f} s → {}\n", prompts->size(), stats.num_tokens,
             profiler::now_seconds() - t0, args.output_path);
  return 0;
}

}  // namespace

void add_profile_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("profile", "Count expert selections per block over a prompt set and save them as "
                                            "JSON for `hetmoe plan --stats` (or merge saved files)");
  auto args = std::make_shared<ProfileArgs>();
  cmd->add_option("-m,--model", args->model_path, "GGUF model file");
  cmd->add_option("-f,--prompts", args->prompts_path,
                  "Prompt file: one prompt per line, or JSONL lines {\"prompt\": \"...\"}");
  cmd->add_option("-o,--output", args->output_path, "Statistics file to write")->required();
  cmd->add_option("--merge", args->merge_paths, "Merge these statistics files (comma-separated) into -o instead")
      ->delimiter(',');
  cmd->add_option("-n,--n-predict", args->num_decode, "Greedy decode tokens after each prompt (counted too)")
      ->check(int_range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->num_threads, "CPU threads")->check(int_range(1, 4096))->capture_default_str();
  cmd->add_option("-c,--ctx,--ctx-size", args->context_length, "Context length")->check(int_range(1, 1 << 24))
      ->capture_default_str();
  cmd->add_option("--load", args->load, kLoadHelp)->check(CLI::IsMember({"auto", "mmap", "memory"}))->capture_default_str();
  cmd->callback([args, &exit_code] { exit_code = run_profile(*args); });
}

}  // namespace hetmoe::cli
