#include "runtime/forward_factory.h"

#include "runtime/forward_reference.h"

namespace hetmoe {

Expected<std::unique_ptr<ForwardPass>> create_forward(const Model& model, const ForwardOptions& options) {
  auto ref = ReferenceForward::create(model, options.context_length, options.kv_type, options.num_threads);
  if (!ref) return ref.error();
  return std::unique_ptr<ForwardPass>(std::make_unique<ReferenceForward>(std::move(*ref)));
}

const char* forward_path_name(const ForwardOptions&) { return "reference"; }

}  // namespace hetmoe
