// Q8_0 matrix-vector launcher (decoder: mv_fmt_q8_0.cuh, kernel skeleton: mv_kernel.cuh).
#include "cuda/mv_fmt_q8_0.cuh"
#include "cuda/mv_launch.cuh"

namespace dsv4::cuda::mv {

void launch_q8_0(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtQ8_0>(l, nb, s, "mv_fast_kernel<Q8_0>");
}

void launch_q8_0_x8(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtQ8_0_X8>(l, nb, s, "mv_fast_kernel<Q8_0 x8>");
}

}  // namespace dsv4::cuda::mv
