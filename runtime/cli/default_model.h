#pragma once
// The embedded default model of the commands that run one (generate, chat, bench) when no -m is given: the
// synthetic tiny preset (runtime/model/synth.h, seed 0), written once to the cache directory, so a fresh clone runs
// end to end without a download.

#include <string>

#include "runtime/base/expected.h"

namespace hetmoe::cli {

/// `given` when not empty; else the default model's path ($HETMOE_CACHE_DIR, else $XDG_CACHE_HOME/hetmoe, else
/// $HOME/.cache/hetmoe, else ./.hetmoe-cache), written there first (with a line on stderr) when missing.
/// Errors: kIo when the cache directory cannot be created; synth_write's.
Expected<std::string> model_or_default(const std::string& given);

}  // namespace hetmoe::cli
