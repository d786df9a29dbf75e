// Diagnostic (DSV4_CUDA_REPEAT, cuda_forward.cpp): how many times launch_k (pdl.cuh) issues each
// launch; the forward sets it per stage. Issuing one stage's kernels twice in the decode graph and
// timing the token gives that stage's cost on the critical path, which isolated kernel timings
// overstate (under PDL a kernel's weight copies overlap its predecessor). 0 knocks the stage out
// (its outputs keep stale values): the speed-up bounds what making it free could gain.
// 1 outside such runs.
#pragma once

namespace dsv4::cuda {

inline int& launch_repeat() {
  static int r = 1;
  return r;
}

}  // namespace dsv4::cuda
