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

// sum_i w[i] * x[i] over one row of n values stored as type t. Accumulates in f32 per block
// (the order is fixed for a given build and dispatch level, so results are reproducible).
float dot_row(GgmlType t, const void* row, const float* x, int64_t n);

// y[r] = dot_row(W row r, x) for r in [0, rows); rows are row_bytes apart. Multi-threaded.
void matvec(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, float* y);

// Y[b][r] = dot_row(W row r, X[b]) for a batch of nb input vectors (row-major X[nb][cols],
// Y[nb][rows]). Each element equals the matvec result bit for bit.
void matmul(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, int64_t nb,
            float* y);

// Name of the dispatch level in use ("avx2" or "scalar"); DSV4_FORCE_SCALAR=1 forces scalar.
const char* dispatch_level();

// Random *valid* blocks for tests and synthetic models: codes uniform, scales finite and chosen
// so values are around `scale` in magnitude. Deterministic for a given seed.
void random_blocks(GgmlType t, uint64_t seed, float scale, void* dst, int64_t n);

// Quantizers used by the test-model generator (round-to-nearest; not quality-optimised):
// returns false for types without a quantizer here.
bool quantize_row(GgmlType t, const float* src, void* dst, int64_t n);

}  // namespace dsv4::quant
