// Torch op of vec-scale: argument checks, then one launch per call.
#include "torch_binding.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "vec_scale.h"

// kernel-builder supplies these in registration.h; defined here when absent so the same file
// also builds through torch's JIT extension loader.
#ifndef TORCH_LIBRARY_EXPAND
#define TORCH_LIBRARY_EXPAND(NAME, MODULE) TORCH_LIBRARY(NAME, MODULE)
#endif

void vec_scale(torch::Tensor& out, const torch::Tensor& x, double alpha) {
  TORCH_CHECK(x.is_cuda() && out.is_cuda(), "vec_scale: tensors must be on a CUDA device");
  TORCH_CHECK(x.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat, "vec_scale: float32 only");
  TORCH_CHECK(x.is_contiguous() && out.is_contiguous(), "vec_scale: tensors must be contiguous");
  TORCH_CHECK(x.numel() == out.numel(), "vec_scale: out and x must have the same number of elements");
  const at::cuda::CUDAGuard guard(x.device());
  auto err = vec_scale::launch_vec_scale(out.data_ptr<float>(), x.data_ptr<float>(), static_cast<float>(alpha),
                                         x.numel(), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "vec_scale: launch failed: ", cudaGetErrorString(err));
}

TORCH_LIBRARY_EXPAND(TORCH_EXTENSION_NAME, ops) {
  ops.def("vec_scale(Tensor! out, Tensor x, float alpha) -> ()");
  ops.impl("vec_scale", torch::kCUDA, &vec_scale);
}
