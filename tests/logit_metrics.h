#pragma once
// Metrics for comparing outputs (tests only): NMSE of two vectors, per-position KL divergence of next-token
// distributions and percentiles.
// The fixture agreement bar (tests/data/README.md): KL(reference ‖ other) p50 ≤ 1e-3 over all positions and
// p99 ≤ 5e-3 over the positions whose router margin is ≥ 0.15.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace hetmoe::test {

/// Normalized mean squared error Σ (got − ref)² / Σ ref², both [n] f32, summed in double (the plain squared error
/// when ref is all zeros).
inline double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(ref[i]);
    err += d * d;
    norm += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return norm > 0.0 ? err / norm : err;
}

/// KL(p ‖ q) of softmax(p_logits) and softmax(q_logits), both [n] f32, computed in double.
inline double kl_divergence(const float* p_logits, const float* q_logits, size_t n) {
  const auto log_sum_exp = [n](const float* x) {
    double m = x[0];
    for (size_t i = 1; i < n; ++i) m = std::max(m, static_cast<double>(x[i]));
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
    return m + std::log(s);
  };
  const double lp = log_sum_exp(p_logits), lq = log_sum_exp(q_logits);
  double kl = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double log_p = p_logits[i] - lp, log_q = q_logits[i] - lq;
    kl += std::exp(log_p) * (log_p - log_q);
  }
  return std::max(kl, 0.0);
}

/// Percentile q ∈ [0, 100] with linear interpolation between order statistics (numpy's default).
inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double rank = q / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (rank - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

/// Reads a whole little-endian float32 file.
inline std::vector<float> read_f32_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  std::vector<float> v;
  if (!in) return v;
  const auto size = static_cast<size_t>(in.tellg());
  v.resize(size / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
  return v;
}

/// Reads whitespace-separated numbers.
template <class T>
std::vector<T> read_numbers(const std::string& path) {
  std::ifstream in(path);
  std::vector<T> v;
  T x;
  while (in >> x) v.push_back(x);
  return v;
}

/// Agreement of `other` logits with `reference` logits, both [num_positions][vocab].
struct Agreement {
  double p50_all = 0;          // KL p50 over all positions
  double p99_confident = 0;    // KL p99 over positions with router margin ≥ 0.15
  double top1 = 0;             // fraction of positions with the same argmax
  std::vector<double> kl;      // (num_positions)
};

inline Agreement agreement(const std::vector<float>& reference, const std::vector<float>& other, size_t vocab,
                           const std::vector<double>& router_margin, double margin_threshold = 0.15) {
  Agreement a;
  const size_t n = reference.size() / vocab;
  std::vector<double> confident;
  size_t same_top1 = 0;
  for (size_t p = 0; p < n; ++p) {
    const float* r = &reference[p * vocab];
    const float* o = &other[p * vocab];
    const double kl = kl_divergence(r, o, vocab);
    a.kl.push_back(kl);
    if (p < router_margin.size() && router_margin[p] >= margin_threshold) confident.push_back(kl);
    same_top1 += std::max_element(r, r + vocab) - r == std::max_element(o, o + vocab) - o;
  }
  a.p50_all = percentile(a.kl, 50);
  a.p99_confident = percentile(confident, 99);
  a.top1 = n ? static_cast<double>(same_top1) / static_cast<double>(n) : 0;
  return a;
}

}  // namespace hetmoe::test
