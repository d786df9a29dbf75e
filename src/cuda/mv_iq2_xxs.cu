// IQ2_XXS matrix-vector launcher (decoder: mv_fmt_iq2_xxs.cuh, kernel skeleton: mv_kernel.cuh).
#include "cuda/mv_fmt_iq2_xxs.cuh"
#include "cuda/mv_launch.cuh"

namespace dsv4::cuda::mv {

void launch_iq2_xxs(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtIQ2_XXS>(l, nb, s, "mv_fast_kernel<IQ2_XXS>");
}

void launch_iq2_xxs_x8(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtIQ2_XXS_X8>(l, nb, s, "mv_fast_kernel<IQ2_XXS x8>");
}

}  // namespace dsv4::cuda::mv
