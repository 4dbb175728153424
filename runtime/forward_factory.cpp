#include "runtime/forward_factory.h"

#include "runtime/forward_cpu.h"
#include "runtime/forward_reference.h"
#include "runtime/worker_pool.h"

namespace hetmoe {

Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options) {
  if (options.use_reference) {
    auto ref = ReferenceForward::create(model, options.context_length, options.kv_type, options.num_threads);
    if (!ref) return ref.error();
    return std::unique_ptr<ForwardPass>(std::make_unique<ReferenceForward>(std::move(*ref)));
  }
  auto isa = cpu::selected_isa();
  if (!isa) return isa.error();
  CpuForwardOptions cpu_options;
  cpu_options.context_length = options.context_length;
  cpu_options.kv_type = options.kv_type;
  cpu_options.num_threads = options.num_threads;
  cpu_options.max_batch_tokens = options.max_batch_tokens;
  cpu_options.rollback_slots = options.rollback_slots;
  // CpuForward runs every job in one arena, so the workers of several NUMA nodes share one spanning arena.
  auto pool = WorkerPool::create_for_machine(options.num_threads, options.thread_layout, /*one_arena=*/true);
  if (!pool) return pool.error();
  std::shared_ptr<WorkerPool> shared_pool = std::move(*pool);
  cpu_options.arena = &shared_pool->arena(0);
  cpu_options.arena_owner = std::move(shared_pool);
  auto cpu_forward = CpuForward::create(model, cpu_options, cpu::kernel_table(*isa));
  if (!cpu_forward) return cpu_forward.error();
  return std::unique_ptr<ForwardPass>(std::move(*cpu_forward));
}

std::string forward_path_name(const ForwardOptions& options) {
  if (options.use_reference) return "reference";
  auto isa = cpu::selected_isa();
  return std::string("cpu ") + (isa ? cpu::isa_name(*isa) : "?");
}

}  // namespace hetmoe
