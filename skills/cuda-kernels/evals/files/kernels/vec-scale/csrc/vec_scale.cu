// One thread per element, grid-stride loop: a memory-bound elementwise kernel.
#include "vec_scale.h"

namespace vec_scale {

__global__ void vec_scale_kernel(float* __restrict__ out, const float* __restrict__ x, float alpha, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = alpha * x[i];
  }
}

cudaError_t launch_vec_scale(float* out, const float* x, float alpha, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int threads = 256;
  const int64_t wanted = (n + threads - 1) / threads;
  const int blocks = static_cast<int>(wanted < 65535 ? wanted : 65535);
  vec_scale_kernel<<<blocks, threads, 0, stream>>>(out, x, alpha, n);
  return cudaGetLastError();
}

}  // namespace vec_scale
