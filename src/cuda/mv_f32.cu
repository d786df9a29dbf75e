// F32 matrix-vector launcher (decoder: mv_fmt_f32.cuh, kernel skeleton: mv_kernel.cuh).
#include "cuda/mv_fmt_f32.cuh"
#include "cuda/mv_launch.cuh"

namespace dsv4::cuda::mv {

void launch_f32(const Launch& l, int nb, cudaStream_t s) {
  launch_fast<FmtF32>(l, nb, s, "mv_fast_kernel<F32>");
}

}  // namespace dsv4::cuda::mv
