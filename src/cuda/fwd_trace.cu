// DSV4_CUDA_TRACE (cuda_forward.cpp): time stamps between the stages of a decode graph.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/fwd_common.cuh"
#include "cuda/fwd_kernels.h"
#include "cuda/pdl.cuh"

namespace dsv4::cuda::fwd {
namespace {

// One thread: waits for everything before it in the stream (under PDL the wait returns once the
// predecessors have completed), then charges the time since stamp i-1 to acc[i-1]. Stamp 0 counts
// the passes in acc[n_slots].
__global__ void trace_stamp_kernel(unsigned long long* ts, unsigned long long* acc, int i,
                                   int n_slots) {
  pdl_trigger();
  pdl_wait();
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  if (i > 0)
    acc[i - 1] += t - ts[i - 1];
  else
    acc[n_slots] += 1;
  ts[i] = t;
}

// One thread, on any stream: after everything before it on that stream, adds the time since
// main-stream stamp `ref` (which that stream is ordered after) to acc[slot].
__global__ void trace_probe_kernel(const unsigned long long* ts, unsigned long long* acc, int ref,
                                   int slot) {
  pdl_trigger();
  pdl_wait();
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  acc[slot] += t - ts[ref];
}

}  // namespace

void trace_probe(const unsigned long long* ts, unsigned long long* acc, int ref, int slot,
                 cudaStream_t s) {
  launch_once(trace_probe_kernel, 1, 1, 0, s, ts, acc, ref, slot);
  FWD_LAUNCH_CHECK("trace_probe_kernel");
}

void trace_stamp(unsigned long long* ts, unsigned long long* acc, int i, int n_slots,
                 cudaStream_t s) {
  launch_once(trace_stamp_kernel, 1, 1, 0, s, ts, acc, i, n_slots);
  FWD_LAUNCH_CHECK("trace_stamp_kernel");
}

}  // namespace dsv4::cuda::fwd
