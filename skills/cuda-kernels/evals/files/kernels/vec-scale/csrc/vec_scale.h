// out[i] = alpha * x[i] over n float32 elements, on `stream`. Plain CUDA: no torch headers.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace vec_scale {

cudaError_t launch_vec_scale(float* out, const float* x, float alpha, int64_t n, cudaStream_t stream);

}  // namespace vec_scale
