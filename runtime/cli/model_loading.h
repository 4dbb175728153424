#pragma once
// Model::load with progress on stderr while the weights are read into memory (the 20b model takes tens of seconds):
// on a terminal a bar redrawn in place, erased when done; on a pipe a line every few seconds. A load that finishes
// within half a second shows nothing.

#include <string>
#include <string_view>

#include "runtime/base/expected.h"
#include "runtime/model/gguf.h"
#include "runtime/model/model.h"

namespace hetmoe::cli {

/// Model::load(path, mode) with the progress described above, labelled "hetmoe COMMAND". Errors: Model::load's.
Expected<Model> load_model_with_progress(std::string_view command, const std::string& path,
                                         gguf::File::LoadMode mode);

}  // namespace hetmoe::cli
