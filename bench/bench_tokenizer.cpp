// Encoding throughput of hetmoe's o200k tokenizer on the golden corpus, with the same two workloads and the same
// figures as scripts/tokenizer_golden/bench.mjs prints for the reference encoder gpt-tokenizer, so the two can be
// compared on one machine:
//   strings   every corpus string encoded on its own;
//   document  the corpus strings joined by "\n" into one text, encoded in one call.
// Each workload: one warm-up pass, then passes until at least MIN_SECONDS have elapsed; MB/s = UTF-8 bytes / time
// (1 MB = 10^6 bytes), the best pass and the mean. Both workloads run twice: with the tokenizer's default cache of
// long-piece BPE results (pieces over 48 bytes; warm after the first pass) and with it off. Every result is checked
// against the golden ids first.
// Usage: bench_tokenizer [VOCAB.gguf] [CORPUS.jsonl] [MIN_SECONDS]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/text/tokenizer.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void run(const char* name, size_t num_bytes, double min_seconds, const std::function<size_t()>& pass) {
  pass();
  std::vector<double> times;
  size_t num_tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  while (seconds_since(start) < min_seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    num_tokens = pass();
    times.push_back(seconds_since(t0));
  }
  const double best = *std::min_element(times.begin(), times.end());
  const double mean = std::accumulate(times.begin(), times.end(), 0.0) / static_cast<double>(times.size());
  fmt::print("hetmoe {}: {:.3f} MB -> {} tokens, {} passes, best {:.2f} MB/s, mean {:.2f} MB/s\n", name,
             num_bytes / 1e6, num_tokens, times.size(), num_bytes / 1e6 / best, num_bytes / 1e6 / mean);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string data_dir = HETMOE_TEST_DATA_DIR;
  const std::string vocab_path = argc > 1 ? argv[1] : data_dir + "/o200k-harmony-vocab.gguf";
  const std::string corpus_path = argc > 2 ? argv[2] : data_dir + "/tokenizer-golden/o200k_base.jsonl";
  const double min_seconds = argc > 3 ? std::stod(argv[3]) : 3.0;

  auto file = hetmoe::gguf::File::open(vocab_path);
  if (!file) {
    fmt::print(stderr, "bench_tokenizer: {}\n", file.error().to_string());
    return 1;
  }
  auto tokenizer = hetmoe::Tokenizer::from_gguf(*file);
  if (!tokenizer) {
    fmt::print(stderr, "bench_tokenizer: {}\n", tokenizer.error().to_string());
    return 1;
  }
  std::ifstream in(corpus_path);
  if (!in) {
    fmt::print(stderr, "bench_tokenizer: {}: cannot open\n", corpus_path);
    return 1;
  }
  std::vector<std::string> texts;
  std::string line;
  size_t num_mismatches = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    texts.push_back(j.at("text").get<std::string>());
    if (tokenizer->encode(texts.back(), false) != j.at("ids").get<std::vector<int32_t>>()) ++num_mismatches;
  }
  if (num_mismatches != 0) {
    fmt::print(stderr, "bench_tokenizer: {} of {} strings differ from the golden ids; not timing\n", num_mismatches,
               texts.size());
    return 1;
  }
  std::string document;
  size_t string_bytes = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (i > 0) document += '\n';
    document += texts[i];
    string_bytes += texts[i].size();
  }
  for (const bool cache : {true, false}) {
    tokenizer->set_piece_cache_capacity(cache ? hetmoe::Tokenizer::kDefaultPieceCacheBytes : 0);
    const std::string mode = cache ? "cache" : "no cache";
    run(("strings (" + mode + ")").c_str(), string_bytes, min_seconds, [&] {
      size_t n = 0;
      for (const std::string& t : texts) n += tokenizer->encode(t, false).size();
      return n;
    });
    run(("document (" + mode + ")").c_str(), document.size(), min_seconds,
        [&] { return tokenizer->encode(document, false).size(); });
  }
  fmt::print("all {} strings equal the golden ids\n", texts.size());
  return 0;
}
