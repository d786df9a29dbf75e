// IQ2_XXS decoder for the fast matvec kernel: {f16 d; u16 qs[32]} (66 B, 256 values); 8 groups of
// 32 values, each two u32: A = four grid indices, B = four 7-bit sign indices + 4-bit scale s:
// w = d*(0.5+s)*0.25 * grid[A_l][j] * (bit j of ksigns[B_l] ? -1 : 1).
//
// Unit: 2 blocks = 132 B = 33 words (4-byte aligned), staged with 4-byte cp.async. The grid is a
// 1 KiB shared table of 256 words holding an entry's 8 magnitudes {8, 25, 43} as codes 0/1/2 in
// nibbles: one LDS + two PRMT (from the byte table 0x002B1908) give the 8 magnitude bytes. The 8
// signs (7-bit index + parity bit) are spread to 0x80/0x00 bytes with a multiply, and one PRMT per
// value assembles sign | magnitude as the exact denormal float +-g * 2^-149, multiplied by
// x * 2^96 from shared memory; y += d_group * sum, scaled back by 2^53. d_group uses the CPU's f32
// operations.
#pragma once
#include "cuda/mv_intrin.cuh"
#include "cuda/mv_params.h"
#include "quant/iq2_tables.h"

namespace dsv4::cuda::mv {

struct NibbleGrid {
  uint32_t v[256];
};
constexpr uint32_t iq2_grid_code(uint8_t b) {
  return b == 8 ? 0u : b == 25 ? 1u : 2u;
}
constexpr NibbleGrid make_nibble_grid() {
  NibbleGrid t{};
  for (int i = 0; i < 256; ++i) {
    uint32_t w = 0;
    for (int j = 0; j < 8; ++j)
      w |= iq2_grid_code((uint8_t)(quant::detail::kIq2xxsGrid[i] >> (8 * j))) << (4 * j);
    t.v[i] = w;
  }
  return t;
}
constexpr bool iq2_grid_magnitudes_ok() {
  for (int i = 0; i < 256; ++i)
    for (int j = 0; j < 8; ++j) {
      const uint8_t b = (uint8_t)(quant::detail::kIq2xxsGrid[i] >> (8 * j));
      if (b != 8 && b != 25 && b != 43) return false;
    }
  return true;
}
static_assert(iq2_grid_magnitudes_ok(), "IQ2_XXS grid magnitudes must be 8, 25 or 43");
inline constexpr NibbleGrid kNibbleGrid = make_nibble_grid();
namespace {
__device__ const NibbleGrid g_nibble_grid = make_nibble_grid();
}  // namespace

// prmt selector: magnitude byte J of a in byte 0, zeros (sign replica of a byte < 0x80) in bytes
// 1-2, sign byte J of b (0x80 or 0) in byte 3.
template <int J>
inline constexpr uint32_t kSignMagSel = (uint32_t)J | ((8u | J) << 4) | ((8u | J) << 8) |
                                        ((4u + J) << 12);

struct FmtIQ2_XXS {
  static constexpr FormatGeom kGeom = kGeomIQ2_XXS;
  static constexpr bool kDenormal = true;
  static constexpr bool kOptionalSmemX = false;  // planner may stage x in shared memory

  DSV4_HD static uint32_t table_word(int i) {
#ifdef __CUDA_ARCH__
    return g_nibble_grid.v[i];
#else
    return kNibbleGrid.v[i];
#endif
  }

  // The unit's two blocks. Block 0: d = bytes 0-1, group g at bytes 2+8g (2-byte aligned:
  // funnel shifts). Block 1: d = bytes 66-67 (high half of word 16), group g at words 17+2g,
  // 18+2g. group() returns the words A (grid indices), B (signs, scale) of group g of block b and
  // its scale d*(0.5+s)*0.25 in the CPU's f32 operations.
  DSV4_HD static float block_scale(const uint32_t (&w)[33], int b) {
    return f16_bits_to_f32(b == 0 ? w[0] : (w[16] >> 16));
  }
  DSV4_HD static float group(const uint32_t (&w)[33], int b, int g, float d, uint32_t& A,
                             uint32_t& B) {
    A = b == 0 ? funnel_r(w[2 * g], w[2 * g + 1], 16) : w[17 + 2 * g];
    B = b == 0 ? funnel_r(w[2 * g + 1], w[2 * g + 2], 16) : w[18 + 2 * g];
    return fmul_rn(fmul_rn(d, fadd_rn(0.5f, (float)(B >> 28))), 0.25f);
  }

  template <int NB, class X>
  DSV4_HD static void dot(const uint32_t (&w)[33], const X& x, const float*, int,
                          const uint32_t* tab, float (&acc)[NB]) {
    DSV4_UNROLL
    for (int b = 0; b < 2; ++b) {
      const float d = block_scale(w, b);
      DSV4_UNROLL
      for (int g = 0; g < 8; ++g) {
        uint32_t A, B;
        const float db = group(w, b, g, d, A, B);
        float s[NB][4];
        DSV4_UNROLL
        for (int l = 0; l < 4; ++l) {
          const uint32_t nib = tab[(A >> (8 * l)) & 0xFFu];
          const uint32_t mlo = byte_perm(0x002B1908u, 0u, nib & 0xFFFFu);
          const uint32_t mhi = byte_perm(0x002B1908u, 0u, nib >> 16);
          const uint32_t s7 = (B >> (7 * l)) & 127u;
          const uint32_t m8 = s7 | ((popc(s7) & 1u) << 7);                 // ksigns_iq2xs[s7]
          const uint32_t tlo = ((m8 & 0xFu) * 0x10204080u) & 0x80808080u;  // bit j -> MSB of byte j
          const uint32_t thi = ((m8 >> 4) * 0x10204080u) & 0x80808080u;
          const float f0 = as_float(prmt(mlo, tlo, kSignMagSel<0>));
          const float f1 = as_float(prmt(mlo, tlo, kSignMagSel<1>));
          const float f2 = as_float(prmt(mlo, tlo, kSignMagSel<2>));
          const float f3 = as_float(prmt(mlo, tlo, kSignMagSel<3>));
          const float f4 = as_float(prmt(mhi, thi, kSignMagSel<0>));
          const float f5 = as_float(prmt(mhi, thi, kSignMagSel<1>));
          const float f6 = as_float(prmt(mhi, thi, kSignMagSel<2>));
          const float f7 = as_float(prmt(mhi, thi, kSignMagSel<3>));
          DSV4_UNROLL
          for (int v = 0; v < NB; ++v) {
            const float4h xa = x.ld(v, 256 * b + 32 * g + 8 * l);
            const float4h xb = x.ld(v, 256 * b + 32 * g + 8 * l + 4);
            float t = fma_f(f0, xa.x, 0.0f);  // chain l of this group
            t = fma_f(f1, xa.y, t);
            t = fma_f(f2, xa.z, t);
            t = fma_f(f3, xa.w, t);
            t = fma_f(f4, xb.x, t);
            t = fma_f(f5, xb.y, t);
            t = fma_f(f6, xb.z, t);
            t = fma_f(f7, xb.w, t);
            s[v][l] = t;
          }
        }
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v)
          acc[v] = fma_f(db, (s[v][0] + s[v][1]) + (s[v][2] + s[v][3]), acc[v]);
#ifdef __CUDA_ARCH__
        // Keep the scheduler from hoisting the next groups' loads above this one (registers).
        asm volatile("" ::: "memory");
#endif
      }
    }
  }
};

// The int8-x variant (FormatGeom::x8, MatvecOp::x8): x arrives as int8 per 32 values with one
// scale each (X8). A group's 32 weights are built as signed bytes: the grid entry's 8 magnitude
// bytes (8, 25, 43) come from a 2 KiB shared table as two words; the 8 signs (7-bit index +
// parity) become per-byte ones o (0x01 where negative, one multiply spreads 4 bits to 4 bytes) and
// masks m = o * 0xFF, so that (g ^ m) + o negates exactly the masked bytes (256 - g has no carry
// for g >= 8). Four dp4a per 8 values and vector give the exact integer sum, and y += d_group *
// (x scale * sum). The signs are computed, not looked up: a second random-index table load per 8
// values made shared memory the bottleneck (slower than the f32 decoder). ncu (H200, 6 experts'
// gate+up): L1 72 %, DRAM 17 %, 54 % issue slots busy; the f32 kernel's 1 KiB nibble table (one
// 4-byte load + two PRMT instead of one 8-byte load) was slower here (28.8 vs 26.7 us).
struct X8Table {
  uint32_t v[512];
};
constexpr X8Table make_x8_table() {
  X8Table t{};
  for (int i = 0; i < 256; ++i) {
    t.v[2 * i] = (uint32_t)quant::detail::kIq2xxsGrid[i];
    t.v[2 * i + 1] = (uint32_t)(quant::detail::kIq2xxsGrid[i] >> 32);
  }
  return t;
}
inline constexpr X8Table kX8Table = make_x8_table();
namespace {
__device__ const X8Table g_x8_table = make_x8_table();
}  // namespace

// Shared by the int8-x decoders: the signed bytes of 8 weights (wlo: values 0-3, whi: 4-7) times
// values [i, i + 8) of x, added to each vector's integer sum; and y += d_group * (x scale * sum)
// for 32-value group k once its sums are complete.
template <int NB>
DSV4_HD void dp8_x8(uint32_t wlo, uint32_t whi, const X8& x, int i, int (&is)[NB]) {
  DSV4_UNROLL
  for (int v = 0; v < NB; ++v) {
    uint32_t xlo, xhi;
    x.q(v, i, xlo, xhi);
    is[v] = dp4a_s8(wlo, xlo, is[v]);
    is[v] = dp4a_s8(whi, xhi, is[v]);
  }
}
template <int NB>
DSV4_HD void add_group_x8(float db, const X8& x, int k, const int (&is)[NB], float (&acc)[NB]) {
  DSV4_UNROLL
  for (int v = 0; v < NB; ++v) acc[v] = fma_f(db, x.scale(v, k) * (float)is[v], acc[v]);
}

struct FmtIQ2_XXS_X8 {
  static constexpr FormatGeom kGeom = kGeomIQ2_XXS_X8;
  static constexpr bool kDenormal = false;
  static constexpr bool kOptionalSmemX = false;

  DSV4_HD static uint32_t table_word(int i) {
#ifdef __CUDA_ARCH__
    return g_x8_table.v[i];
#else
    return kX8Table.v[i];
#endif
  }

  template <int NB>
  DSV4_HD static void dot(const uint32_t (&w)[33], const X8& x, const uint32_t* tab,
                          float (&acc)[NB]) {
    DSV4_UNROLL
    for (int b = 0; b < 2; ++b) {
      const float d = FmtIQ2_XXS::block_scale(w, b);
      DSV4_UNROLL
      for (int g = 0; g < 8; ++g) {
        uint32_t A, B;
        const float db = FmtIQ2_XXS::group(w, b, g, d, A, B);
        int is[NB];
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v) is[v] = 0;
        DSV4_UNROLL
        for (int l = 0; l < 4; ++l) {
          const uint32_t gi = (A >> (8 * l)) & 0xFFu;
          const uint32_t s7 = (B >> (7 * l)) & 127u;
          const uint32_t m8 = s7 | ((popc(s7) & 1u) << 7);                 // ksigns_iq2xs[s7]
          const uint32_t olo = ((m8 & 0xFu) * 0x00204081u) & 0x01010101u;  // bit j -> byte j
          const uint32_t ohi = ((m8 >> 4) * 0x00204081u) & 0x01010101u;
#ifdef __CUDA_ARCH__
          const uint2 gw = reinterpret_cast<const uint2*>(tab)[gi];
#else
          const struct { uint32_t x, y; } gw{tab[2 * gi], tab[2 * gi + 1]};
#endif
          const uint32_t wlo = (gw.x ^ (olo * 0xFFu)) + olo;
          const uint32_t whi = (gw.y ^ (ohi * 0xFFu)) + ohi;
          dp8_x8<NB>(wlo, whi, x, 256 * b + 32 * g + 8 * l, is);
        }
        add_group_x8<NB>(db, x, 8 * b + g, is, acc);
      }
    }
  }
};

// The int8-x variant with both lookups from tables replicated R times (R = 16 or 32; word e of copy
// c at e * R + c, lane l reads copy l % R, so the 32 lanes of a warp hit R different banks). An
// 8-value piece becomes two words of signed bytes with no arithmetic on the bytes: the grid word
// holds the 8 magnitude codes (0/1/2) in nibbles, the sign word (indexed by the 7-bit sign index,
// parity folded in) holds each sign in bit 2 of its nibble, and their OR selects, per byte, one of
// {8, 25, 43} (bytes 0-2 of kPos) or {-8, -25, -43} (bytes 4-6, kNeg) through one byte_perm per
// word. Per 8 values: two table loads, an OR, a shift, two byte_perm, two dp4a (the arithmetic
// decoder above spends ~20 operations and one 8-byte load from a table in one copy, whose bank
// conflicts averaged 4-way). The bytes, the integer sums and the float operations after them
// are those of FmtIQ2_XXS_X8: the results are identical.
constexpr uint32_t iq2_sign_selector(uint32_t s7) {
  uint32_t par = 0;
  for (int j = 0; j < 7; ++j) par ^= (s7 >> j) & 1u;
  const uint32_t m8 = s7 | (par << 7);  // ksigns_iq2xs[s7]
  uint32_t r = 0;
  for (int j = 0; j < 8; ++j) r |= ((m8 >> j) & 1u) << (4 * j + 2);
  return r;
}
struct SignSelectors {
  uint32_t v[128];
};
constexpr SignSelectors make_sign_selectors() {
  SignSelectors t{};
  for (uint32_t i = 0; i < 128; ++i) t.v[i] = iq2_sign_selector(i);
  return t;
}
inline constexpr SignSelectors kSignSelectors = make_sign_selectors();
namespace {
__device__ const SignSelectors g_sign_selectors = make_sign_selectors();
}  // namespace

template <int R>
struct FmtIQ2_XXS_X8R {
  static_assert(R == 16 || R == 32, "copies: 16 or 32");
  static constexpr FormatGeom kGeom = geom_iq2_xxs_x8r(R);
  static constexpr bool kDenormal = false;
  static constexpr bool kOptionalSmemX = false;
  static constexpr int kSignWord0 = 256 * R;
  static constexpr uint32_t kPos = 0x002B1908u;  // bytes 0-2: 8, 25, 43
  static constexpr uint32_t kNeg = 0x00D5E7F8u;  // bytes 4-6: -8, -25, -43

  DSV4_HD static uint32_t table_word(int i) {
#ifdef __CUDA_ARCH__
    return i < kSignWord0 ? g_nibble_grid.v[i / R] : g_sign_selectors.v[(i - kSignWord0) / R];
#else
    return i < kSignWord0 ? kNibbleGrid.v[i / R] : kSignSelectors.v[(i - kSignWord0) / R];
#endif
  }

  static constexpr int kLog = R == 32 ? 5 : 4;

  // The word at byte address a of shared memory (device) or at word a / 4 of the table (host).
  DSV4_HD static uint32_t lds(const uint32_t* tab, uint32_t a) {
#ifdef __CUDA_ARCH__
    (void)tab;
    uint32_t v;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(a));
    return v;
#else
    return tab[a / 4];
#endif
  }

  // Selector of piece L of a group: grid entry = byte L of A (one byte_perm and one LEA give its
  // address in this lane's copy), sign index = bits 7L.. of B (shift, mask, add).
  template <int L>
  DSV4_HD static uint32_t selector(const uint32_t* tab, uint32_t A, uint32_t B, uint32_t gbase,
                                   uint32_t sbase) {
    const uint32_t e = byte_perm(A, 0u, 0x4440u | L);
    constexpr int kSh = 7 * L - (kLog + 2);
    const uint32_t so =
        (kSh >= 0 ? B >> (kSh > 0 ? kSh : 0) : B << (kSh < 0 ? -kSh : 0)) & (0x7Fu << (kLog + 2));
    return lds(tab, gbase + (e << (kLog + 2))) | lds(tab, sbase + so);
  }

  template <int NB>
  DSV4_HD static void dot(const uint32_t (&w)[33], const X8& x, const uint32_t* tab,
                          float (&acc)[NB]) {
#ifdef __CUDA_ARCH__
    // Byte addresses of this lane's copies; the positive levels in a per-thread register (a
    // constant would be copied from a uniform register before every byte_perm).
    uint32_t lid, t;
    asm volatile("mov.u32 %0, %%laneid;" : "=r"(lid));
    asm volatile("xor.b32 %0, %1, %2;" : "=r"(t) : "r"(lid), "r"(kPos));
    const uint32_t pos = t ^ lid;
    const uint32_t gbase =
        static_cast<uint32_t>(__cvta_generic_to_shared(tab)) + 4u * (lid & (R - 1));
#else
    const uint32_t pos = kPos, gbase = 0;
#endif
    const uint32_t sbase = gbase + 4u * kSignWord0;
    DSV4_UNROLL
    for (int b = 0; b < 2; ++b) {
      const float d = FmtIQ2_XXS::block_scale(w, b);
      DSV4_UNROLL
      for (int g = 0; g < 8; ++g) {
        uint32_t A, B;
        const float db = FmtIQ2_XXS::group(w, b, g, d, A, B);
        const uint32_t sel[4] = {
            selector<0>(tab, A, B, gbase, sbase), selector<1>(tab, A, B, gbase, sbase),
            selector<2>(tab, A, B, gbase, sbase), selector<3>(tab, A, B, gbase, sbase)};
        int is[NB];
        DSV4_UNROLL
        for (int v = 0; v < NB; ++v) is[v] = 0;
        DSV4_UNROLL
        for (int l = 0; l < 4; ++l) {
          // Selector nibbles use bits 0-2 only (bit 3, prmt's sign replication, stays 0).
          dp8_x8<NB>(prmt(pos, kNeg, sel[l]), prmt(pos, kNeg, sel[l] >> 16), x,
                     256 * b + 32 * g + 8 * l, is);
        }
        add_group_x8<NB>(db, x, 8 * b + g, is, acc);
      }
    }
  }
};

}  // namespace dsv4::cuda::mv
