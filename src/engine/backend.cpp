// make_backend (engine/backend.h): picks the CPU reference or, in CUDA builds, the GPU backend.
#include "engine/backend.h"

#include "core/error.h"

namespace dsv4::engine {

#if DSV4_HAVE_CUDA
// backend_cuda.cpp (compiled only with DSV4_CUDA).
std::unique_ptr<Backend> make_cuda_backend(const Model& model, const BackendOptions& opt,
                                           const std::string& flag);
#endif

std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opt,
                                      const std::string& flag) {
  if (!opt.gpu) return make_cpu_backend(model, opt.qat);
#if DSV4_HAVE_CUDA
  return make_cuda_backend(model, opt, flag);
#else
  fail(
      "{}: this build has no CUDA backend (configure with -DDSV4_CUDA=ON on a machine with the "
      "CUDA toolkit)",
      flag);
#endif
}

}  // namespace dsv4::engine
