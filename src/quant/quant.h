// Block formats of the published GGUFs: decoding to f32 and dot products against f32 vectors.
// Every kernel has a scalar reference; SIMD variants (AVX2/FMA) are picked at run time and must
// agree with the scalar path (bit-exact for dequantization).
#pragma once
#include <cstdint>

#include "core/ggml_type.h"

namespace dsv4::quant {

// True for the types this engine decodes: F32 F16 BF16 Q8_0 Q2_K Q4_K IQ2_XXS (I32 is raw).
bool is_supported(GgmlType t);

// Decode n values (n a multiple of the type's block size) from `src` into `dst`.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);

// sum_i w[i] * x[i] over one row of n values stored as type t. Fixed f32 order, the same at every
// dispatch level: each weight is decoded exactly (as dequantize_row), lane i % 32 accumulates
// fma(w[i], x[i], lane) in increasing i, then the 32 lanes are summed in a fixed tree. So the AVX2
// result equals the scalar one bit for bit (for finite inputs; NaN payloads may differ), and the
// error is bounded by (n/32 + 5) * 2^-24 * sum_i |w[i] x[i]|.
float dot_row(GgmlType t, const void* row, const float* x, int64_t n);

// y[r] = dot_row(W row r, x) for r in [0, rows); rows are row_bytes apart. Multi-threaded.
void matvec(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, float* y);

// Y[b][r] = dot_row(W row r, X[b]) for a batch of nb input vectors (row-major X[nb][cols],
// Y[nb][rows]). Each element equals the matvec result bit for bit. Multi-threaded over rows;
// each row is decoded once and reused for the whole batch.
void matmul(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, int64_t nb,
            float* y);

// Name of the dispatch level in use ("avx2" or "scalar"); DSV4_FORCE_SCALAR=1 forces scalar.
const char* dispatch_level();

// Random *valid* blocks for tests and synthetic models: n values (a multiple of the block size);
// codes uniform (IQ2_XXS: uniform grid indices, 7-bit ksigns indices and 4-bit scales), f16
// scale fields finite (jittered per block) and chosen so the RMS of the decoded values is about
// `scale` (>= 0, finite). Deterministic for a given (type, seed).
void random_blocks(GgmlType t, uint64_t seed, float scale, void* dst, int64_t n);

// Quantizers used by the test-model generator (round-to-nearest; not quality-optimised), bit
// identical to GGML's reference quantizers: F32 (copy), F16 and BF16 (round to nearest even),
// Q8_0 (d = amax/127 stored as f16, q = roundf(x * (1/d))). Returns false for other types.
bool quantize_row(GgmlType t, const float* src, void* dst, int64_t n);

// Explicit dispatch levels, for tests and benchmarks (the functions above use active_dispatch()).
enum class Dispatch { kScalar = 0, kAvx2 = 1 };
Dispatch active_dispatch();
bool dispatch_available(Dispatch d);
const char* dispatch_name(Dispatch d);
// As above at level d (which must be available: throws otherwise).
void dequantize_row(Dispatch d, GgmlType t, const void* src, float* dst, int64_t n);
float dot_row(Dispatch d, GgmlType t, const void* row, const float* x, int64_t n);

}  // namespace dsv4::quant
