// Micro-benchmarks of src/quant; throughput is reported in bytes of *weights* read per second.
//   dot/<type>/<level>       one thread, dot_row over a 256 KiB matrix (L2 resident): kernel speed
//   dequant/<type>/<level>   one thread, dequantize_row over the same matrix
//   matvec/<type>/threads:N  matvec over a 96 MiB matrix (streams from DRAM), N OpenMP threads
//   matmul8/<type>/threads:N matmul with a batch of 8 vectors (weights counted once per call)
// Example: build-quant/bench/bench_quant --benchmark_filter='dot/' --benchmark_min_time=0.5s
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "quant/quant.h"

using namespace dsv4;
using namespace dsv4::quant;

namespace {

constexpr int64_t kCols = 4096;
constexpr uint64_t kSmallBytes = 256ull << 10;  // L2-resident matrix
constexpr uint64_t kBigBytes = 96ull << 20;     // far larger than the last-level cache

struct Matrix {
  GgmlType t;
  int64_t rows;
  uint64_t row_bytes;
  std::vector<uint8_t> w;
  std::vector<float> x;
};

Matrix make_matrix(GgmlType t, uint64_t target_bytes, int64_t nb = 1) {
  Matrix m{t, 0, ggml_row_bytes(t, kCols), {}, {}};
  m.rows = (int64_t)std::max<uint64_t>(1, target_bytes / m.row_bytes);
  m.w.resize(m.rows * m.row_bytes);
  random_blocks(t, 1, 0.02f, m.w.data(), m.rows * kCols);
  m.x.resize((size_t)(kCols * nb));
  for (size_t i = 0; i < m.x.size(); ++i) m.x[i] = (float)((i * 37) % 101) / 101.f - 0.5f;
  return m;
}

void bm_dot(benchmark::State& st, GgmlType t, Dispatch d) {
  if (!dispatch_available(d)) return st.SkipWithError("dispatch level not available");
  const Matrix m = make_matrix(t, kSmallBytes);
  for (auto _ : st) {
    float s = 0;
    for (int64_t r = 0; r < m.rows; ++r)
      s += dot_row(d, t, m.w.data() + r * m.row_bytes, m.x.data(), kCols);
    benchmark::DoNotOptimize(s);
  }
  st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)m.w.size());
}

void bm_dequant(benchmark::State& st, GgmlType t, Dispatch d) {
  if (!dispatch_available(d)) return st.SkipWithError("dispatch level not available");
  const Matrix m = make_matrix(t, kSmallBytes);
  std::vector<float> out((size_t)kCols);
  for (auto _ : st) {
    for (int64_t r = 0; r < m.rows; ++r)
      dequantize_row(d, t, m.w.data() + r * m.row_bytes, out.data(), kCols);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)m.w.size());
}

void bm_matvec(benchmark::State& st, GgmlType t) {
  const int threads = (int)st.range(0);
  const Matrix m = make_matrix(t, kBigBytes);
  std::vector<float> y((size_t)m.rows);
  omp_set_num_threads(threads);
  for (auto _ : st) {
    matvec(t, m.w.data(), m.rows, kCols, m.x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)m.w.size());
}

void bm_matmul8(benchmark::State& st, GgmlType t) {
  const int threads = (int)st.range(0);
  const int64_t nb = 8;
  const Matrix m = make_matrix(t, kBigBytes / 4, nb);
  std::vector<float> y((size_t)(m.rows * nb));
  omp_set_num_threads(threads);
  for (auto _ : st) {
    matmul(t, m.w.data(), m.rows, kCols, m.x.data(), nb, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  st.SetBytesProcessed((int64_t)st.iterations() * (int64_t)m.w.size());
  st.counters["vec/s"] =
      benchmark::Counter((double)st.iterations() * nb, benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  const GgmlType types[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS,
                            GgmlType::F16,  GgmlType::BF16, GgmlType::F32};
  for (GgmlType t : types) {
    const std::string tn(ggml_type_name(t));
    for (Dispatch d : {Dispatch::kAvx2, Dispatch::kScalar}) {
      const std::string dn = dispatch_name(d);
      benchmark::RegisterBenchmark(("dot/" + tn + "/" + dn).c_str(), bm_dot, t, d);
      benchmark::RegisterBenchmark(("dequant/" + tn + "/" + dn).c_str(), bm_dequant, t, d);
    }
  }
  for (GgmlType t : types) {
    const std::string tn(ggml_type_name(t));
    benchmark::RegisterBenchmark(("matvec/" + tn).c_str(), bm_matvec, t)
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("matmul8/" + tn).c_str(), bm_matmul8, t)
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("dsv4.dispatch", dispatch_level());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
