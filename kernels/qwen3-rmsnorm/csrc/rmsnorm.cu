// RMSNorm for Qwen3 (hidden 4096, head_dim 128, eps 1e-6) at the memory limit.
//
// Numerics follow transformers' Qwen3RMSNorm exactly: normalise in fp32,
// round to the input dtype, then multiply by the weight (in fp32, rounded
// once more). The fused variant first rounds residual + x to the input dtype,
// as the model's own `residual + hidden_states` does, and normalises that.
//
// Each row is read once into registers (16-byte vector loads), reduced in
// fp32, and written once. Rows of up to 64 vectors (hidden <= 512 in bf16)
// are handled by a group of 4..32 lanes of one warp; wider rows by one block.
#include "rmsnorm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

namespace qwen3_rmsnorm {
namespace {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T, int N> struct Pack { T v[N]; };

// Streaming (evict-first) loads and stores for the activations, read-only
// cached loads for the weight, which every row reuses.
template <typename T, int N> __device__ __forceinline__ Pack<T, N> load_stream(const T* p) {
  Pack<T, N> r;
  if constexpr (sizeof(T) * N == 16) {
    uint4 u = __ldcs(reinterpret_cast<const uint4*>(p));
    memcpy(&r, &u, 16);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) r.v[j] = p[j];
  }
  return r;
}

template <typename T, int N> __device__ __forceinline__ Pack<T, N> load_weight(const T* p) {
  Pack<T, N> r;
  if constexpr (sizeof(T) * N == 16) {
    uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    memcpy(&r, &u, 16);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) r.v[j] = p[j];
  }
  return r;
}

template <typename T, int N> __device__ __forceinline__ void store_stream(T* p, const Pack<T, N>& r) {
  if constexpr (sizeof(T) * N == 16) {
    uint4 u;
    memcpy(&u, &r, 16);
    __stcs(reinterpret_cast<uint4*>(p), u);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) p[j] = r.v[j];
  }
}

// The segment a global row belongs to, and the row's index inside it.
__device__ __forceinline__ Segment select(const Problem& p, int64_t& row) {
  if (p.nseg > 1 && row >= p.seg[0].rows) {
    row -= p.seg[0].rows;
    return p.seg[1];
  }
  return p.seg[0];
}

// One thread's share of a row: `VPT` packs at lane + k * stride.
template <typename T, int VEC, int VPT, bool FUSED> struct RowSlice {
  Pack<T, VEC> x[VPT];
  Pack<T, VEC> r[FUSED ? VPT : 1];
  Pack<T, VEC> w[VPT];

  __device__ __forceinline__ float load(const Segment& s, int64_t row, int lane, int stride, int nvec,
                                        bool active) {
    const T* x_row = static_cast<const T*>(s.x) + row * s.x_stride;
    T* res_row = FUSED ? static_cast<T*>(s.residual) + row * s.res_stride : nullptr;
    const T* w_ptr = static_cast<const T*>(s.weight);
    // Issue every load before the first use, so they are all in flight.
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (active && i < nvec) {
        x[k] = load_stream<T, VEC>(x_row + i * VEC);
        if constexpr (FUSED) r[k] = load_stream<T, VEC>(res_row + i * VEC);
        w[k] = load_weight<T, VEC>(w_ptr + i * VEC);
      }
    }
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      const bool here = active && i < nvec;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        if (here) {
          float a = to_float(x[k].v[j]);
          if constexpr (FUSED) {
            const T sum = from_float<T>(a + to_float(r[k].v[j]));
            x[k].v[j] = sum;  // the rounded sum is what gets normalised
            a = to_float(sum);
          }
          ss += a * a;
        }
      }
      if constexpr (FUSED) {
        if (here) store_stream<T, VEC>(res_row + i * VEC, x[k]);
      }
    }
    return ss;
  }

  __device__ __forceinline__ void store(const Segment& s, int64_t row, int lane, int stride, int nvec, bool active,
                                        float inv_rms) {
    T* out_row = static_cast<T*>(s.out) + row * s.out_stride;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (active && i < nvec) {
        Pack<T, VEC> o;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const T normed = from_float<T>(to_float(x[k].v[j]) * inv_rms);
          o.v[j] = from_float<T>(to_float(normed) * to_float(w[k].v[j]));
        }
        store_stream<T, VEC>(out_row + i * VEC, o);
      }
    }
  }
};

__device__ __forceinline__ float warp_sum(float v, int width) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    if (off < width) v += __shfl_xor_sync(0xffffffffu, v, off);
  }
  return v;
}

// Wide rows: one block per row, the row held in registers.
// Up to 1024 threads of <= 64 registers; with 4 or more packs per thread the
// cap is 512 threads (up to 128 registers), which keeps the row out of local memory.
template <int VPT> constexpr int block_limit() { return VPT >= 4 ? 512 : 1024; }

template <typename T, int VEC, int VPT, bool FUSED>
__global__ void __launch_bounds__(block_limit<VPT>()) block_kernel(const Problem p) {
  __shared__ float partial[32];
  int64_t row = blockIdx.x;
  const Segment s = select(p, row);
  const int nvec = p.hidden / VEC;
  RowSlice<T, VEC, VPT, FUSED> slice;
  float ss = slice.load(s, row, threadIdx.x, blockDim.x, nvec, true);
  ss = warp_sum(ss, 32);
  const int warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) partial[warp] = ss;
  __syncthreads();
  float total = 0.f;
  const int nwarps = blockDim.x >> 5;
  for (int i = 0; i < nwarps; ++i) total += partial[i];
  const float inv_rms = rsqrtf(total / static_cast<float>(p.hidden) + p.eps);
  slice.store(s, row, threadIdx.x, blockDim.x, nvec, true, inv_rms);
}

// Narrow rows (per-head q/k norm): LANES lanes of a warp per row.
template <typename T, int VEC, int VPT, int LANES, bool FUSED>
__global__ void __launch_bounds__(256, 4) warp_kernel(const Problem p, const int64_t total_rows) {
  const int lane = threadIdx.x % LANES;
  int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / LANES) + threadIdx.x / LANES;
  const bool active = row < total_rows;
  if (!active) row = 0;
  const Segment s = select(p, row);
  const int nvec = p.hidden / VEC;
  RowSlice<T, VEC, VPT, FUSED> slice;
  float ss = slice.load(s, row, lane, LANES, nvec, active);
  ss = warp_sum(ss, LANES);
  const float inv_rms = rsqrtf(ss / static_cast<float>(p.hidden) + p.eps);
  slice.store(s, row, lane, LANES, nvec, active, inv_rms);
}

constexpr int kWarpBlock = 256;
constexpr int kMaxVptVec = 4;      // 16-byte packs per thread
constexpr int kMaxVptScalar = 16;  // single elements per thread (unaligned or odd sizes)

int max_threads(int vpt) { return vpt >= 4 ? 512 : 1024; }

int64_t total_rows(const Problem& p) {
  int64_t n = 0;
  for (int i = 0; i < p.nseg; ++i) n += p.seg[i].rows;
  return n;
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

bool can_vectorise(const Problem& p, int vec) {
  if (p.hidden % vec != 0) return false;
  for (int i = 0; i < p.nseg; ++i) {
    const Segment& s = p.seg[i];
    if (!aligned16(s.x) || !aligned16(s.out) || !aligned16(s.weight)) return false;
    if (s.x_stride % vec != 0 || s.out_stride % vec != 0) return false;
    if (p.fused_add && (!aligned16(s.residual) || s.res_stride % vec != 0)) return false;
  }
  return true;
}

template <typename T, int VEC, int VPT, int LANES>
cudaError_t launch_warp(const Problem& p, int64_t rows, cudaStream_t stream) {
  const int rows_per_block = kWarpBlock / LANES;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (p.fused_add) {
    warp_kernel<T, VEC, VPT, LANES, true><<<static_cast<unsigned>(blocks), kWarpBlock, 0, stream>>>(p, rows);
  } else {
    warp_kernel<T, VEC, VPT, LANES, false><<<static_cast<unsigned>(blocks), kWarpBlock, 0, stream>>>(p, rows);
  }
  return cudaGetLastError();
}

template <typename T, int VEC, int VPT>
cudaError_t launch_block(const Problem& p, int64_t rows, int threads, cudaStream_t stream) {
  if (p.fused_add) {
    block_kernel<T, VEC, VPT, true><<<static_cast<unsigned>(rows), threads, 0, stream>>>(p);
  } else {
    block_kernel<T, VEC, VPT, false><<<static_cast<unsigned>(rows), threads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

// Four 16-byte packs per thread (hidden 4096 in bf16: 128 threads per row)
// measured fastest from 2048 tokens up on an H200; smaller rows start at 2.
int auto_vpt(int nvec, int max_vpt) {
  int vpt = nvec >= 256 ? 4 : 2;
  if (vpt > max_vpt) vpt = max_vpt;
  while (vpt < max_vpt && (nvec + vpt - 1) / vpt > max_threads(vpt)) vpt *= 2;
  return vpt;
}

template <typename T, int VEC>
const char* dispatch_vec(const Problem& p, int64_t rows, cudaStream_t stream) {
  const int nvec = p.hidden / VEC;
  cudaError_t err;
  if (p.vpt == 0 && nvec <= 64) {
    if (nvec <= 4) err = launch_warp<T, VEC, 1, 4>(p, rows, stream);
    else if (nvec <= 8) err = launch_warp<T, VEC, 2, 4>(p, rows, stream);
    else if (nvec <= 16) err = launch_warp<T, VEC, 2, 8>(p, rows, stream);   // head_dim 128 in bf16
    else if (nvec <= 32) err = launch_warp<T, VEC, 2, 16>(p, rows, stream);
    else err = launch_warp<T, VEC, 2, 32>(p, rows, stream);
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
  }
  constexpr int kMaxVpt = VEC > 1 ? kMaxVptVec : kMaxVptScalar;
  const int vpt = p.vpt ? p.vpt : auto_vpt(nvec, kMaxVpt);
  if (vpt > kMaxVpt) return "vectors per thread above the maximum for this path";
  const int threads = ((nvec + vpt - 1) / vpt + 31) / 32 * 32;
  if (threads > max_threads(vpt)) return "hidden size too large: the row must fit in the registers of one block";
  if (rows > 0x7fffffff) return "too many rows for one launch (more than 2^31 - 1)";
  switch (vpt) {
    case 1: err = launch_block<T, VEC, 1>(p, rows, threads, stream); break;
    case 2: err = launch_block<T, VEC, 2>(p, rows, threads, stream); break;
    case 4: err = launch_block<T, VEC, 4>(p, rows, threads, stream); break;
    case 8:
      if constexpr (VEC == 1) { err = launch_block<T, VEC, 8>(p, rows, threads, stream); break; }
      return "vectors per thread 8 is for scalar rows only";
    case 16:
      if constexpr (VEC == 1) { err = launch_block<T, VEC, 16>(p, rows, threads, stream); break; }
      return "vectors per thread 16 is for scalar rows only";
    default: return "vectors per thread must be 0 (automatic), 1, 2 or 4";
  }
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename T>
const char* dispatch(const Problem& p, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const int64_t rows = total_rows(p);
  if (rows == 0) return nullptr;
  if (can_vectorise(p, kVec)) return dispatch_vec<T, kVec>(p, rows, stream);
  return dispatch_vec<T, 1>(p, rows, stream);
}

}  // namespace

int max_hidden(DType dtype, bool vectorised) {
  const int elem = dtype == DType::f32 ? 4 : 2;
  return vectorised ? max_threads(kMaxVptVec) * kMaxVptVec * (16 / elem) : max_threads(kMaxVptScalar) * kMaxVptScalar;
}

const char* launch(const Problem& problem, cudaStream_t stream) {
  if (problem.hidden <= 0) return "hidden size must be positive";
  switch (problem.dtype) {
    case DType::f32: return dispatch<float>(problem, stream);
    case DType::f16: return dispatch<__half>(problem, stream);
    case DType::bf16: return dispatch<__nv_bfloat16>(problem, stream);
  }
  return "unsupported dtype";
}

}  // namespace qwen3_rmsnorm
