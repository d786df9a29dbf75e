// IQ2_XXS int8-x launcher with replicated selector tables (decoder FmtIQ2_XXS_X8R in
// mv_fmt_iq2_xxs.cuh); a file of its own so that it compiles beside mv_iq2_xxs.cu.
#include "cuda/mv_fmt_iq2_xxs.cuh"
#include "cuda/mv_launch.cuh"

namespace dsv4::cuda::mv {

void launch_iq2_xxs_x8r(const Launch& l, int nb, int rep, cudaStream_t s) {
  if (rep == 32) return launch_fast<FmtIQ2_XXS_X8R<32>>(l, nb, s, "mv_fast_kernel<IQ2_XXS x8 r32>");
  if (rep == 16) return launch_fast<FmtIQ2_XXS_X8R<16>>(l, nb, s, "mv_fast_kernel<IQ2_XXS x8 r16>");
  throw_invalid_argument("matvec: IQ2_XXS table copies must be 16 or 32");
}

}  // namespace dsv4::cuda::mv
