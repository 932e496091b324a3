// Launcher interface of the Qwen3 RMSNorm kernels: plain CUDA, no torch headers,
// so `lab kernel check` can compile the .cu files with nvcc alone.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace qwen3_rmsnorm {

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };

// A run of rows that share one weight: rows of `hidden` elements, the last
// dimension contiguous, consecutive rows `*_stride` elements apart.
struct Segment {
  void* out;
  const void* x;
  void* residual;  // fused add only: residual += x, then normalise residual
  const void* weight;
  int64_t rows;
  int64_t x_stride;
  int64_t out_stride;
  int64_t res_stride;
};

// One launch covers one or two segments (q and k of the per-head norm).
struct Problem {
  Segment seg[2];
  int nseg;
  int hidden;
  float eps;
  float inv_hidden;  // set by launch()
  DType dtype;
  bool fused_add;
  int vpt;     // vectors per thread for the generic block path; 0 = automatic
  int config;  // a fixed tuning shape (bfloat16): grid*1000 + hints*100 + weight*10 + vpt; 0 = automatic
};

// Largest supported hidden size for the dtype (the row is kept in registers).
int max_hidden(DType dtype, bool vectorised);

// Launches the kernel on `stream`. Returns nullptr on success, else a message.
const char* launch(const Problem& problem, cudaStream_t stream);

}  // namespace qwen3_rmsnorm
