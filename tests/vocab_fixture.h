#pragma once
// Test helper: a fixture GGUF from tests/data with its tokenizer, loaded once per test binary.

#include <memory>
#include <string>

#include "runtime/model/gguf.h"
#include "runtime/text/tokenizer.h"

namespace hetmoe::test {

struct Vocab {
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string error;  // why loading failed (empty on success)
};

/// Opens tests/data/NAME and builds its tokenizer; on failure `error` says why and the pointers are null.
inline Vocab load_vocab(const std::string& name) {
  Vocab v;
  Expected<gguf::File> file = gguf::File::open(std::string(HETMOE_TEST_DATA_DIR) + "/" + name);
  if (!file) {
    v.error = file.error().to_string();
    return v;
  }
  v.file = std::make_unique<gguf::File>(std::move(*file));
  Expected<Tokenizer> tok = Tokenizer::from_gguf(*v.file);
  if (!tok) {
    v.error = tok.error().to_string();
    return v;
  }
  v.tokenizer = std::make_unique<Tokenizer>(std::move(*tok));
  return v;
}

}  // namespace hetmoe::test
