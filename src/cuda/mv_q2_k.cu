// Q2_K matrix-vector launcher (decoder: mv_fmt_q2_k.cuh, kernel skeleton: mv_kernel.cuh).
#include "cuda/mv_fmt_q2_k.cuh"
#include "cuda/mv_launch.cuh"

namespace dsv4::cuda::mv {

void launch_q2_k(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtQ2_K>(l, nb, s, "mv_fast_kernel<Q2_K>");
}

void launch_q2_k_x8(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtQ2_K_X8>(l, nb, s, "mv_fast_kernel<Q2_K x8>");
}

}  // namespace dsv4::cuda::mv
