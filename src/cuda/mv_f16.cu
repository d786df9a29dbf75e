// F16 and BF16 matrix-vector launchers (decoder: mv_fmt_f16.cuh, kernel skeleton: mv_kernel.cuh).
#include "cuda/mv_fmt_f16.cuh"
#include "cuda/mv_launch.cuh"

namespace dsv4::cuda::mv {

void launch_f16(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtF16>(l, nb, s, "mv_fast_kernel<F16>");
}
void launch_bf16(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtBF16>(l, nb, s, "mv_fast_kernel<BF16>");
}

}  // namespace dsv4::cuda::mv
