#pragma once
// The configuration file's runtime keys applied to the executor's options (runtime/exec/forward_factory.h).

#include "runtime/app/config.h"
#include "runtime/base/expected.h"
#include "runtime/exec/forward_factory.h"

namespace hetmoe {

/// The config file's keys that set ForwardOptions directly (runtime/app/config.h): [threads] per_node, cores, smt onto
/// thread_layout (placement/thread_layout.h: threads_per_node, worker_pus, SmtUse::kYes/kNo); per_node and cores
/// make the thread count follow from them (num_threads = 0) unless `threads_given` (-t on the command line, or
/// threads.count in the file: then cores must list that many CPUs); [numa] policy onto numa_policy; [gpu] id onto
/// gpu_idx; [model] attention_bf16 = true turns attention_bf16 on (the flag --attention-bf16 does too; false leaves
/// it as it is). The placement keys are the Plan's (runtime/cli/plan_options.h). Errors: kInvalidArgument for
/// threads.count together with threads.per_node.
Status apply_runtime_config(const RuntimeConfig& config, bool threads_given, ForwardOptions& options);

}  // namespace hetmoe
