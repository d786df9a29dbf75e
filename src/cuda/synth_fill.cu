#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>

#include "cuda/cuda_check.h"
#include "cuda/synth_fill.h"

namespace dsv4::cuda::synth {
namespace {

// Type codes (GgmlType values; core/ggml_type.h is host C++ and not needed here).
constexpr int kF32 = 0, kF16 = 1, kQ8_0 = 8, kQ2_K = 10, kQ4_K = 12, kIQ2_XXS = 16, kBF16 = 30,
              kI32 = 26;

// Everything below is a pure function of (seed, index), shared by the kernels and the host
// replay (fill_host), which therefore produce the same bytes.
__host__ __device__ inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// The i-th output of splitmix64 seeded with `seed` (counter-based: any order, any thread).
__host__ __device__ inline uint64_t hash_at(uint64_t seed, uint64_t i) {
  return mix64(seed + (i + 1) * 0x9e3779b97f4a7c15ull);
}
__host__ __device__ inline float unit(uint64_t h) {  // [0, 1), 24 bits
  return (float)(h >> 40) * (1.0f / 16777216.0f);
}
// a * b + c rounded twice (no FMA contraction on the device: host and device agree).
__host__ __device__ inline float mul_add(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(__fmul_rn(a, b), c);
#else
  volatile float p = a * b;
  return p + c;
#endif
}

// f32 -> f16 bits, round to nearest even, in integer arithmetic only, so that the host replay and
// the kernels produce the same bits by construction (the device path through __half lost the low
// byte of every value on sm_90). |v| <= 65504 here; NaN/Inf are not produced.
__host__ __device__ inline uint16_t f16_bits_rne(float v) {
  uint32_t x;
  memcpy(&x, &v, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = (int32_t)((x >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp <= 0) {  // subnormal or zero in f16
    if (exp < -10) return (uint16_t)sign;
    mant |= 0x800000u;
    const int shift = 14 - exp;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry rolls into the exponent
  return (uint16_t)(sign | h);
}

__host__ __device__ inline void put_half(uint8_t* p, float v) {
  const uint16_t b = f16_bits_rne(fmaxf(fminf(v, 65504.0f), -65504.0f));
  p[0] = (uint8_t)(b & 0xFFu);
  p[1] = (uint8_t)(b >> 8);
}

// Byte b of the random stream of a tensor.
__host__ __device__ inline void random_word(uint8_t* dst, uint64_t nbytes, uint64_t seed,
                                            uint64_t w) {
  const uint64_t h = hash_at(seed, w);
  if (w * 8 + 8 <= nbytes) {
    memcpy(dst + w * 8, &h, 8);
  } else {
    for (uint64_t b = w * 8; b < nbytes; ++b) dst[b] = (uint8_t)(h >> (8 * (b - w * 8)));
  }
}

// The f16 scale fields of block b: d = d_base * jitter at off_d; when off_dmin >= 0,
// dmin = dmin_base * jitter' at off_dmin. Jitter in [0.5, 1.5), as quant::random_blocks.
__host__ __device__ inline void patch_block(uint8_t* blk, int off_d, int off_dmin, float d_base,
                                            float dmin_base, uint64_t seed, uint64_t b) {
  const uint64_t h = hash_at(seed, b);
  put_half(blk + off_d, d_base * (0.5f + unit(h)));
  if (off_dmin >= 0) put_half(blk + off_dmin, dmin_base * (0.5f + unit(h << 24)));
}

__host__ __device__ inline void plain_elem(uint8_t* dst, int type, int fill, float scale,
                                           float offset, uint64_t seed, uint64_t i) {
  const float u = unit(hash_at(seed, i));
  float v;
  if (fill == (int)Fill::kPositive)
    v = mul_add(u, scale, offset);
  else  // symmetric uniform of RMS `scale` (2u - 1 is exact)
    v = mul_add(2.0f * u - 1.0f, 1.7320508f * scale, offset);
  if (type == kF32) {
    memcpy(dst + 4 * i, &v, 4);
  } else if (type == kF16) {
    put_half(dst + 2 * i, v);
  } else {  // BF16: round to nearest even (values are finite)
    uint32_t bits;
    memcpy(&bits, &v, 4);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    const uint16_t hb = (uint16_t)(bits >> 16);
    memcpy(dst + 2 * i, &hb, 2);
  }
}

// Row r of [rows][row_len]: start + j * step (mod E), distinct for j < row_len <= E.
__host__ __device__ inline void expert_row(int32_t* dst, int64_t row_len, int64_t n_expert,
                                           uint64_t seed, uint64_t r) {
  const uint64_t max_step = row_len > 1 ? (uint64_t)(n_expert - 1) / (uint64_t)(row_len - 1) : 1;
  const uint64_t h = hash_at(seed, r);
  const uint64_t start = (h & 0xffffffffull) % (uint64_t)n_expert;
  const uint64_t step = 1 + (h >> 32) % (max_step ? max_step : 1);
  for (int64_t j = 0; j < row_len; ++j) {
    const int32_t e = (int32_t)((start + (uint64_t)j * step) % (uint64_t)n_expert);
    memcpy(dst + r * row_len + j, &e, 4);
  }
}

#define GRID_STRIDE(i, n)                                                     \
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < (n); \
       i += (uint64_t)gridDim.x * blockDim.x)

__global__ void random_bytes_kernel(uint8_t* dst, uint64_t nbytes, uint64_t seed) {
  GRID_STRIDE(w, (nbytes + 7) / 8) random_word(dst, nbytes, seed, w);
}
__global__ void patch_scales_kernel(uint8_t* dst, uint64_t nblocks, int block_bytes, int off_d,
                                    int off_dmin, float d_base, float dmin_base, uint64_t seed) {
  GRID_STRIDE(b, nblocks)
  patch_block(dst + b * (uint64_t)block_bytes, off_d, off_dmin, d_base, dmin_base, seed, b);
}
__global__ void plain_kernel(uint8_t* dst, int type, uint64_t n, int fill, float scale,
                             float offset, uint64_t seed) {
  GRID_STRIDE(i, n) plain_elem(dst, type, fill, scale, offset, seed, i);
}
__global__ void expert_ids_kernel(int32_t* dst, uint64_t rows, int64_t row_len, int64_t n_expert,
                                  uint64_t seed) {
  GRID_STRIDE(r, rows) expert_row(dst, row_len, n_expert, seed, r);
}

unsigned grid_for(uint64_t n) {
  const uint64_t blocks = (n + 255) / 256;
  return (unsigned)std::max<uint64_t>(1, std::min<uint64_t>(blocks, 65536));
}

// The plan of one fill: which pieces run, with which parameters.
struct Plan {
  enum Kind { kNone, kIds, kPlain, kBlocks } kind = kNone;
  uint64_t rows = 0;  // kIds
  int block_bytes = 0, off_d = 0, off_dmin = -1;
  float d_base = 0, dmin_base = 0;
  uint64_t scale_seed = 0;
};

Plan plan_for(const FillArgs& a) {
  Plan p;
  if (a.fill == Fill::kExpertIds) {
    if (a.type != kI32 || a.row_len <= 0 || a.n_expert < a.row_len) return p;
    p.kind = Plan::kIds;
    p.rows = a.n_elements / (uint64_t)a.row_len;
    return p;
  }
  if (a.type == kF32 || a.type == kF16 || a.type == kBF16) {
    if (a.fill != Fill::kBlocks) p.kind = Plan::kPlain;
    return p;
  }
  if (a.fill != Fill::kBlocks) return p;
  // Block layout and the divisors of quant::random_blocks (decoded RMS about `scale`).
  float div = 1, dmin_mult = 0;
  switch (a.type) {
    case kQ8_0:
      p.block_bytes = 34, div = 76.5f;
      break;
    case kQ2_K:
      p.block_bytes = 84, p.off_d = 80, p.off_dmin = 82, div = 15.2f, dmin_mult = 1.5f;
      break;
    case kQ4_K:
      p.block_bytes = 144, p.off_d = 0, p.off_dmin = 2, div = 285.0f, dmin_mult = 7.5f;
      break;
    case kIQ2_XXS:
      p.block_bytes = 66, div = 56.0f;
      break;
    default:
      return p;
  }
  if (a.nbytes % (uint64_t)p.block_bytes != 0) return p;
  p.kind = Plan::kBlocks;
  p.d_base = a.scale / div;
  p.dmin_base = p.d_base * dmin_mult;
  p.scale_seed = mix64(a.seed ^ 0x5ca1e5ull);
  return p;
}

}  // namespace

bool launch_fill(const FillArgs& a, cudaStream_t stream) {
  uint8_t* dst = static_cast<uint8_t*>(a.dst);
  if (a.nbytes == 0) return true;
  const Plan p = plan_for(a);
  switch (p.kind) {
    case Plan::kNone:
      return false;
    case Plan::kIds:
      expert_ids_kernel<<<grid_for(p.rows), 256, 0, stream>>>(
          reinterpret_cast<int32_t*>(dst), p.rows, a.row_len, a.n_expert, a.seed);
      DSV4_CUDA_CHECK_LAUNCH("expert_ids_kernel");
      return true;
    case Plan::kPlain:
      plain_kernel<<<grid_for(a.n_elements), 256, 0, stream>>>(
          dst, a.type, a.n_elements, (int)a.fill, a.scale, a.offset, a.seed);
      DSV4_CUDA_CHECK_LAUNCH("plain_kernel");
      return true;
    case Plan::kBlocks: {
      random_bytes_kernel<<<grid_for((a.nbytes + 7) / 8), 256, 0, stream>>>(dst, a.nbytes, a.seed);
      DSV4_CUDA_CHECK_LAUNCH("random_bytes_kernel");
      const uint64_t nblocks = a.nbytes / (uint64_t)p.block_bytes;
      patch_scales_kernel<<<grid_for(nblocks), 256, 0, stream>>>(
          dst, nblocks, p.block_bytes, p.off_d, p.off_dmin, p.d_base, p.dmin_base, p.scale_seed);
      DSV4_CUDA_CHECK_LAUNCH("patch_scales_kernel");
      return true;
    }
  }
  return false;
}

bool fill_host(const FillArgs& a) {
  uint8_t* dst = static_cast<uint8_t*>(a.dst);
  if (a.nbytes == 0) return true;
  const Plan p = plan_for(a);
  switch (p.kind) {
    case Plan::kNone:
      return false;
    case Plan::kIds:
      for (uint64_t r = 0; r < p.rows; ++r)
        expert_row(reinterpret_cast<int32_t*>(dst), a.row_len, a.n_expert, a.seed, r);
      return true;
    case Plan::kPlain:
      for (uint64_t i = 0; i < a.n_elements; ++i)
        plain_elem(dst, a.type, (int)a.fill, a.scale, a.offset, a.seed, i);
      return true;
    case Plan::kBlocks: {
      for (uint64_t w = 0; w < (a.nbytes + 7) / 8; ++w) random_word(dst, a.nbytes, a.seed, w);
      const uint64_t nblocks = a.nbytes / (uint64_t)p.block_bytes;
      for (uint64_t b = 0; b < nblocks; ++b)
        patch_block(dst + b * (uint64_t)p.block_bytes, p.off_d, p.off_dmin, p.d_base, p.dmin_base,
                    p.scale_seed, b);
      return true;
    }
  }
  return false;
}

}  // namespace dsv4::cuda::synth
