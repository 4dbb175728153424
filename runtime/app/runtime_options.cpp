#include "runtime/app/runtime_options.h"

namespace hetmoe {

Status apply_runtime_config(const RuntimeConfig& config, bool threads_given, ForwardOptions& options) {
  const RuntimeConfig::Threads& t = config.threads;
  placement::ThreadLayoutOptions& layout = options.thread_layout;
  if (t.count && t.per_node)
    return make_error(ErrorCode::kInvalidArgument,
                      "threads.count and threads.per_node exclude each other in the config file (per_node sets the "
                      "count per NUMA node)");
  if (t.smt) layout.smt = *t.smt ? placement::SmtUse::kYes : placement::SmtUse::kNo;
  if (t.cores) layout.worker_pus = *t.cores;
  if (!threads_given) {
    if (t.per_node) {
      layout.threads_per_node = *t.per_node;
      options.num_threads = 0;  // per_node × the nodes used
    } else if (t.cores) {
      options.num_threads = 0;  // one worker per listed CPU
    }
  }
  if (config.numa.policy) options.numa_policy = *config.numa.policy;
  if (config.gpu.id) options.gpu_idx = *config.gpu.id;
  if (config.model.attention_bf16.value_or(false)) options.attention_bf16 = true;
  return {};
}

}  // namespace hetmoe
