// RMSNorm for Qwen3 (hidden 4096, head_dim 128, eps 1e-6) at the memory limit.
//
// Numerics follow transformers' Qwen3RMSNorm exactly: normalise in fp32,
// round to the input dtype, then multiply by the weight (in fp32, rounded
// once more). The fused variant first rounds residual + x to the input dtype,
// as the model's own `residual + hidden_states` does, and normalises that.
//
// Each row is read once into registers (16-byte vector loads), reduced in
// fp32, and written once. Rows of up to 64 vectors (hidden <= 512 in bf16)
// are handled by a group of 4..32 lanes of one warp; wider rows by one block,
// which may loop over rows (a persistent grid) and load its next row while it
// reduces the current one.
//
// The vector paths work on 32-bit words (two bf16/fp16 elements): one
// instruction packs two rounded floats, and the weight multiply is a bf16x2 /
// half2 multiply. That multiply is exact-then-rounded, like the fp32 multiply
// of two 16-bit values rounded once, so the results are the same bits; it
// roughly halves the instructions per element, which matters because a
// memory-bound kernel that issues ~24 instructions per element is close to
// issue-bound on Hopper.
#include "rmsnorm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstring>
#include <type_traits>

namespace qwen3_rmsnorm {
namespace {

// ---------------------------------------------------------------- scalar path
// Unaligned rows and sizes that are not a multiple of the vector width.

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// The segment a global row belongs to, and the row's index inside it.
__device__ __forceinline__ Segment select(const Problem& p, int64_t& row) {
  if (p.nseg > 1 && row >= p.seg[0].rows) {
    row -= p.seg[0].rows;
    return p.seg[1];
  }
  return p.seg[0];
}

// One thread's share of a row of single elements: `VPT` elements at lane + k * stride.
template <typename T, int VPT, bool FUSED> struct ScalarSlice {
  T x[VPT];
  T w[VPT];

  __device__ __forceinline__ float load(const Segment& s, int64_t row, int lane, int stride, int n, bool active) {
    const T* x_row = static_cast<const T*>(s.x) + row * s.x_stride;
    T* res_row = FUSED ? static_cast<T*>(s.residual) + row * s.res_stride : nullptr;
    const T* w_ptr = static_cast<const T*>(s.weight);
    T r[FUSED ? VPT : 1];
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (active && i < n) {
        x[k] = x_row[i];
        if constexpr (FUSED) r[k] = res_row[i];
        w[k] = w_ptr[i];
      }
    }
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (active && i < n) {
        float a = to_float(x[k]);
        if constexpr (FUSED) {
          x[k] = from_float<T>(a + to_float(r[k]));  // the rounded sum is what gets normalised
          a = to_float(x[k]);
          res_row[i] = x[k];
        }
        ss += a * a;
      }
    }
    return ss;
  }

  __device__ __forceinline__ void store(const Segment& s, int64_t row, int lane, int stride, int n, bool active,
                                        float inv_rms) {
    T* out_row = static_cast<T*>(s.out) + row * s.out_stride;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (active && i < n) {
        const T normed = from_float<T>(to_float(x[k]) * inv_rms);
        out_row[i] = from_float<T>(to_float(normed) * to_float(w[k]));
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

// Sum over the block: every warp adds the per-warp partials itself (one barrier).
__device__ __forceinline__ float block_sum(float v, float* partial) {
  v = warp_sum(v, 32);
  const int lane = threadIdx.x & 31;
  if (lane == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  return warp_sum(lane < static_cast<int>(blockDim.x >> 5) ? partial[lane] : 0.f, 32);
}

template <typename T, int VPT, bool FUSED>
__global__ void __launch_bounds__(VPT >= 4 ? 512 : 1024) scalar_block_kernel(const Problem p) {
  __shared__ float partial[32];
  int64_t row = blockIdx.x;
  const Segment s = select(p, row);
  ScalarSlice<T, VPT, FUSED> slice;
  const float ss = block_sum(slice.load(s, row, threadIdx.x, blockDim.x, p.hidden, true), partial);
  slice.store(s, row, threadIdx.x, blockDim.x, p.hidden, true, rsqrtf(ss * p.inv_hidden + p.eps));
}

template <typename T, int VPT, int LANES, bool FUSED>
__global__ void __launch_bounds__(256) scalar_warp_kernel(const Problem p, const int64_t total_rows) {
  const int lane = threadIdx.x % LANES;
  int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / LANES) + threadIdx.x / LANES;
  const bool active = row < total_rows;
  if (!active) row = 0;
  const Segment s = select(p, row);
  ScalarSlice<T, VPT, FUSED> slice;
  const float ss = warp_sum(slice.load(s, row, lane, LANES, p.hidden, active), LANES);
  slice.store(s, row, lane, LANES, p.hidden, active, rsqrtf(ss * p.inv_hidden + p.eps));
}

// ---------------------------------------------------------------- vector path
// 16-byte packs (uint4) seen as four 32-bit words.

template <typename To, typename From> __device__ __forceinline__ To bits(const From& f) {
  static_assert(sizeof(To) == sizeof(From), "bit cast between sizes");
  To t;
  memcpy(&t, &f, sizeof(To));
  return t;
}

// Word arithmetic: sum of squares, normalise-and-round, scale-by-weight-and-round, add-and-round.
template <typename T> struct Word;

// squares() and normalise() unpack with different (equivalent) instructions so that the
// compiler does not keep 2x the row as floats across the reduction (registers = occupancy).
template <> struct Word<__nv_bfloat16> {
  static __device__ __forceinline__ float lo(uint32_t w) { return __uint_as_float(w << 16); }
  static __device__ __forceinline__ float hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
  static __device__ __forceinline__ float lo_again(uint32_t w) { return __uint_as_float(__byte_perm(w, 0u, 0x1044)); }
  static __device__ __forceinline__ float hi_again(uint32_t w) { return __uint_as_float(__byte_perm(w, 0u, 0x3244)); }
  static __device__ __forceinline__ uint32_t pack(float a, float b) {
    return bits<uint32_t>(__floats2bfloat162_rn(a, b));
  }
  static __device__ __forceinline__ float2 squares(uint32_t w, float2 acc) {
    return make_float2(fmaf(lo(w), lo(w), acc.x), fmaf(hi(w), hi(w), acc.y));
  }
  static __device__ __forceinline__ uint32_t normalise(uint32_t w, float inv) {
    return pack(lo_again(w) * inv, hi_again(w) * inv);
  }
  static __device__ __forceinline__ uint32_t scale(uint32_t n, uint32_t w) {
    return bits<uint32_t>(__hmul2(bits<__nv_bfloat162>(n), bits<__nv_bfloat162>(w)));
  }
  static __device__ __forceinline__ uint32_t add(uint32_t a, uint32_t b) { return pack(lo(a) + lo(b), hi(a) + hi(b)); }
};

template <> struct Word<__half> {
  static __device__ __forceinline__ float2 unpack(uint32_t w) { return __half22float2(bits<__half2>(w)); }
  static __device__ __forceinline__ uint32_t pack(float a, float b) { return bits<uint32_t>(__floats2half2_rn(a, b)); }
  static __device__ __forceinline__ float2 squares(uint32_t w, float2 acc) {
    const float2 f = unpack(w);
    return make_float2(fmaf(f.x, f.x, acc.x), fmaf(f.y, f.y, acc.y));
  }
  static __device__ __forceinline__ uint32_t normalise(uint32_t w, float inv) {
    const float2 f = unpack(w);
    return pack(f.x * inv, f.y * inv);
  }
  static __device__ __forceinline__ uint32_t scale(uint32_t n, uint32_t w) {
    return bits<uint32_t>(__hmul2(bits<__half2>(n), bits<__half2>(w)));
  }
  static __device__ __forceinline__ uint32_t add(uint32_t a, uint32_t b) {
    const float2 x = unpack(a), y = unpack(b);
    return pack(x.x + y.x, x.y + y.y);
  }
};

template <> struct Word<float> {
  static __device__ __forceinline__ float2 squares(uint32_t w, float2 acc) {
    return make_float2(fmaf(__uint_as_float(w), __uint_as_float(w), acc.x), acc.y);
  }
  static __device__ __forceinline__ uint32_t normalise(uint32_t w, float inv) { return __float_as_uint(__uint_as_float(w) * inv); }
  static __device__ __forceinline__ uint32_t scale(uint32_t n, uint32_t w) {
    return __float_as_uint(__uint_as_float(n) * __uint_as_float(w));
  }
  static __device__ __forceinline__ uint32_t add(uint32_t a, uint32_t b) {
    return __float_as_uint(__uint_as_float(a) + __uint_as_float(b));
  }
};

// Cache hints for the activations (the weight always uses the read-only path):
// 0 plain loads and stores, 1 streaming (.cs) loads and stores,
// 2 non-coherent loads that skip L1 + plain stores, 3 those loads + streaming stores.
// Written as ld.global/st.global: the row pointers come through a struct, and the
// compiler would otherwise emit generic (LD/ST) accesses.
#define QRMS_LD(QUAL, p, r) \
  asm("ld.global" QUAL ".v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p))
#define QRMS_ST(QUAL, p, v) \
  asm volatile("st.global" QUAL ".v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) \
               : "memory")
template <int HINTS> __device__ __forceinline__ uint4 load_act(const void* p) {
  uint4 r;
  if constexpr (HINTS == 1) {
    QRMS_LD(".cs", p, r);
  } else if constexpr (HINTS >= 2) {
    QRMS_LD(".nc.L1::no_allocate", p, r);
  } else {
    QRMS_LD("", p, r);
  }
  return r;
}
// Rows that the kernel also writes (the residual) never take the non-coherent path.
template <int HINTS> __device__ __forceinline__ uint4 load_rw(const void* p) {
  uint4 r;
  if constexpr (HINTS == 1) {
    QRMS_LD(".cs", p, r);
  } else {
    QRMS_LD("", p, r);
  }
  return r;
}
template <int HINTS> __device__ __forceinline__ void store_act(void* p, uint4 v) {
  if constexpr (HINTS == 1 || HINTS == 3) {
    QRMS_ST(".cs", p, v);
  } else {
    QRMS_ST("", p, v);
  }
}
#undef QRMS_LD
#undef QRMS_ST
__device__ __forceinline__ uint4 load_weight(const void* p) { return __ldg(static_cast<const uint4*>(p)); }

// One thread's packs of a row: pack k is lane + k * stride. EXACT: every pack exists.
template <typename T, int VPT, bool FUSED, bool EXACT, int HINTS> struct VecRow {
  static constexpr int kVec = 16 / sizeof(T);
  uint4 x[VPT];  // x; after squares() (fused) the rounded sum x + residual
  uint4 r[FUSED ? VPT : 1];

  static __device__ __forceinline__ bool has(int i, int nvec, bool active) { return EXACT ? active : (active && i < nvec); }

  __device__ __forceinline__ void load(const Segment& s, int64_t row, int lane, int stride, int nvec, bool active) {
    const T* x_row = static_cast<const T*>(s.x) + row * s.x_stride;
    const T* r_row = FUSED ? static_cast<const T*>(s.residual) + row * s.res_stride : nullptr;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (has(i, nvec, active)) {
        x[k] = load_act<HINTS>(x_row + i * kVec);
        if constexpr (FUSED) r[k] = load_rw<HINTS>(r_row + i * kVec);
      }
    }
  }

  // Sum of squares; the fused op first forms (and writes back) the rounded residual sum.
  __device__ __forceinline__ float squares(const Segment& s, int64_t row, int lane, int stride, int nvec, bool active) {
    T* r_row = FUSED ? static_cast<T*>(s.residual) + row * s.res_stride : nullptr;
    float2 ss = make_float2(0.f, 0.f);  // two chains: shorter dependency, same work
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (has(i, nvec, active)) {
        if constexpr (FUSED) {
          x[k] = make_uint4(Word<T>::add(x[k].x, r[k].x), Word<T>::add(x[k].y, r[k].y),
                            Word<T>::add(x[k].z, r[k].z), Word<T>::add(x[k].w, r[k].w));
          store_act<HINTS>(r_row + i * kVec, x[k]);
        }
        ss = Word<T>::squares(x[k].x, ss);
        ss = Word<T>::squares(x[k].y, ss);
        ss = Word<T>::squares(x[k].z, ss);
        ss = Word<T>::squares(x[k].w, ss);
      }
    }
    return ss.x + ss.y;
  }

  __device__ __forceinline__ void store(const Segment& s, int64_t row, int lane, int stride, int nvec, bool active,
                                        float inv, const uint4* w) const {
    T* out_row = static_cast<T*>(s.out) + row * s.out_stride;
#pragma unroll
    for (int k = 0; k < VPT; ++k) {
      const int i = lane + k * stride;
      if (has(i, nvec, active)) {
        const uint4 o = make_uint4(Word<T>::scale(Word<T>::normalise(x[k].x, inv), w[k].x),
                                   Word<T>::scale(Word<T>::normalise(x[k].y, inv), w[k].y),
                                   Word<T>::scale(Word<T>::normalise(x[k].z, inv), w[k].z),
                                   Word<T>::scale(Word<T>::normalise(x[k].w, inv), w[k].w));
        store_act<HINTS>(out_row + i * kVec, o);
      }
    }
  }
};

template <typename T, int VPT, bool EXACT>
__device__ __forceinline__ void load_weights(uint4* w, const Segment& s, int lane, int stride, int nvec, bool active) {
  const T* w_ptr = static_cast<const T*>(s.weight);
#pragma unroll
  for (int k = 0; k < VPT; ++k) {
    const int i = lane + k * stride;
    if (EXACT ? active : (active && i < nvec)) w[k] = load_weight(w_ptr + i * (16 / sizeof(T)));
  }
}

// Register cap: 4 packs per thread may use up to 128 registers, 8 packs up to 255.
template <int VPT> constexpr int vec_block_limit() { return VPT >= 8 ? 256 : VPT >= 4 ? 512 : 1024; }

// Kernel shape of the wide-row path (one block per row at a time).
struct Shape {
  int vpt;       // 16-byte packs per thread
  int grid;      // 0: one block per row; 1: persistent grid; 2: persistent grid, next row prefetched
  int hints;     // cache hints, see load_act
  int weight;    // 0: load the weight with the row; 1: after the reduction; 2: once per block, kept in registers
};

// Wide rows: a block of blockDim.x threads per row, looping over rows
// blockIdx.x, blockIdx.x + gridDim.x, ... With PREFETCH the next row's loads
// are issued before the current row's reduction. WMODE 2 needs one segment.
template <typename T, int VPT, bool FUSED, bool EXACT, bool PREFETCH, int HINTS, int WMODE>
__global__ void __launch_bounds__(vec_block_limit<VPT>()) row_kernel(const Problem p, const int64_t rows) {
  __shared__ float partial[2][32];
  using Row = VecRow<T, VPT, FUSED, EXACT, HINTS>;
  const int nvec = p.hidden / Row::kVec;
  const int tid = threadIdx.x, nt = blockDim.x;
  uint4 w[VPT];
  if constexpr (WMODE == 2) load_weights<T, VPT, EXACT>(w, p.seg[0], tid, nt, nvec, true);
  int64_t row = blockIdx.x;
  Row cur;
  {
    int64_t local = row;
    cur.load(select(p, local), local, tid, nt, nvec, true);
  }
  for (int parity = 0; row < rows; row += gridDim.x, parity ^= 1) {
    const int64_t next = row + gridDim.x;
    Row nxt;
    if constexpr (PREFETCH) {
      if (next < rows) {
        int64_t local = next;
        nxt.load(select(p, local), local, tid, nt, nvec, true);
      }
    }
    int64_t local = row;
    const Segment s = select(p, local);
    if constexpr (WMODE == 0) load_weights<T, VPT, EXACT>(w, s, tid, nt, nvec, true);
    const float ss = block_sum(cur.squares(s, local, tid, nt, nvec, true), partial[parity]);
    const float inv = rsqrtf(ss * p.inv_hidden + p.eps);
    if constexpr (WMODE == 1) load_weights<T, VPT, EXACT>(w, s, tid, nt, nvec, true);
    cur.store(s, local, tid, nt, nvec, true, inv, w);
    if constexpr (PREFETCH) {
      cur = nxt;
    } else if (next < rows) {
      int64_t nl = next;
      cur.load(select(p, nl), nl, tid, nt, nvec, true);
    }
  }
}

// Narrow rows (per-head q/k norm): LANES lanes of a warp per row.
template <typename T, int VPT, int LANES, bool FUSED, int HINTS>
__global__ void __launch_bounds__(256) warp_kernel(const Problem p, const int64_t total_rows) {
  using Row = VecRow<T, VPT, FUSED, false, HINTS>;
  const int lane = threadIdx.x % LANES;
  int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / LANES) + threadIdx.x / LANES;
  const bool active = row < total_rows;
  if (!active) row = 0;
  const Segment s = select(p, row);
  const int nvec = p.hidden / Row::kVec;
  Row slice;
  uint4 w[VPT];
  slice.load(s, row, lane, LANES, nvec, active);
  load_weights<T, VPT, false>(w, s, lane, LANES, nvec, active);
  const float ss = warp_sum(slice.squares(s, row, lane, LANES, nvec, active), LANES);
  slice.store(s, row, lane, LANES, nvec, active, rsqrtf(ss * p.inv_hidden + p.eps), w);
}

// ------------------------------------------------------------------ launching

constexpr int kWarpBlock = 256;
constexpr int kMaxVptVec = 4;      // 16-byte packs per thread (automatic / generic path)
constexpr int kMaxVptScalar = 16;  // single elements per thread (unaligned or odd sizes)
constexpr int kNarrowHints = 0;    // cache hints of the narrow (per-head) path

// The automatic shapes for rows that split exactly into the packs (hidden 4096
// in bf16/fp16: 128 or 64 threads), chosen from the tuning sweep
// (benchmarks/benchmark.py --sweep, H200, bf16, hidden 4096; see CARD.md):
// - up to a few rows per multiprocessor, a persistent prefetching grid with the
//   weight in registers (with one row per block this is the plain kernel; from
//   1 to 3 rows per block it overlaps the next row's loads: 8% faster at 2048
//   tokens than one block per row);
// - for many rows, one block of 64 threads per row (8 packs each), plain
//   loads and stores: the hardware's block scheduling balances the tail
//   better than a persistent grid (7% faster at 32768 tokens).
constexpr Shape kSmallShape{4, 2, 0, 2};
constexpr Shape kLargeShape{8, 0, 0, 0};
constexpr int64_t kSmallRowsPerSm = 24;       // rms_norm: persistent up to this many rows per multiprocessor
constexpr int64_t kSmallRowsPerSmFused = 8;   // fused_add_rms_norm: likewise

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

int multiprocessors() {
  int device = 0, count = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 1;
  return count > 0 ? count : 1;
}

// Blocks of `threads` of `kernel` resident at once on one multiprocessor, cached in `cache`
// (one per kernel instantiation: key device << 40 | threads << 20 | blocks).
template <typename Kernel> int resident_per_sm(Kernel kernel, int threads, std::atomic<int64_t>& cache) {
  int device = 0;
  cudaGetDevice(&device);
  const int64_t key = (static_cast<int64_t>(device) << 40) | (static_cast<int64_t>(threads) << 20);
  const int64_t seen = cache.load(std::memory_order_relaxed);
  if ((seen & ~int64_t{0xfffff}) == key && (seen & 0xfffff) > 0) return static_cast<int>(seen & 0xfffff);
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, 0) != cudaSuccess || blocks < 1) {
    cudaGetLastError();
    blocks = 1;
  }
  cache.store(key | blocks, std::memory_order_relaxed);
  return blocks;
}

template <typename T, int VPT, bool FUSED, bool EXACT, bool PREFETCH, int HINTS, int WMODE>
cudaError_t launch_row_kernel(const Problem& p, int64_t rows, int threads, bool persistent, cudaStream_t stream) {
  static std::atomic<int64_t> cache{0};
  int64_t grid = rows;
  if (persistent) {
    const int per_sm = resident_per_sm(row_kernel<T, VPT, FUSED, EXACT, PREFETCH, HINTS, WMODE>, threads, cache);
    const int64_t resident = static_cast<int64_t>(per_sm) * multiprocessors();
    if (resident < grid) {  // as few blocks as give every block the same number of rows (no tail)
      const int64_t rows_per_block = (rows + resident - 1) / resident;
      grid = (rows + rows_per_block - 1) / rows_per_block;
    }
  }
  if (grid > 0x7fffffff) return cudaErrorInvalidConfiguration;
  row_kernel<T, VPT, FUSED, EXACT, PREFETCH, HINTS, WMODE><<<static_cast<unsigned>(grid), threads, 0, stream>>>(p, rows);
  return cudaGetLastError();
}

template <typename T, int VPT, bool EXACT, bool PREFETCH, int HINTS, int WMODE>
cudaError_t launch_rows(const Problem& p, int64_t rows, int threads, bool persistent, cudaStream_t stream) {
  if (p.fused_add) return launch_row_kernel<T, VPT, true, EXACT, PREFETCH, HINTS, WMODE>(p, rows, threads, persistent, stream);
  return launch_row_kernel<T, VPT, false, EXACT, PREFETCH, HINTS, WMODE>(p, rows, threads, persistent, stream);
}

// A Shape as template arguments; false when this shape is not built.
#define QRMS_SHAPE(V, G, H, W)                                                                        \
  if (shape.vpt == V && shape.grid == G && shape.hints == H && shape.weight == W) {                  \
    *err = launch_rows<T, V, true, (G == 2), H, W>(p, rows, threads, G != 0, stream);                 \
    return true;                                                                                      \
  }

// The shapes every dtype gets (the automatic ones).
template <typename T>
bool launch_auto_shape(const Shape& shape, const Problem& p, int64_t rows, int threads, cudaStream_t stream,
                       cudaError_t* err) {
  QRMS_SHAPE(kSmallShape.vpt, kSmallShape.grid, kSmallShape.hints, kSmallShape.weight)
  QRMS_SHAPE(kLargeShape.vpt, kLargeShape.grid, kLargeShape.hints, kLargeShape.weight)
  return false;
}

// Tuning shapes (bfloat16 only), selected by Problem::config = grid*1000 + hints*100 + weight*10 + vpt.
// Keep in step with TUNING_CONFIGS in torch-ext/qwen3_rmsnorm/__init__.py.
template <typename T>
bool launch_tuning_shape(const Shape& shape, const Problem& p, int64_t rows, int threads, cudaStream_t stream,
                         cudaError_t* err) {
  if (launch_auto_shape<T>(shape, p, rows, threads, stream, err)) return true;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    QRMS_SHAPE(4, 0, 1, 0) QRMS_SHAPE(4, 0, 0, 0) QRMS_SHAPE(4, 0, 2, 0) QRMS_SHAPE(4, 0, 3, 0)
    QRMS_SHAPE(4, 0, 0, 1) QRMS_SHAPE(2, 0, 0, 0) QRMS_SHAPE(1, 0, 0, 0) QRMS_SHAPE(8, 0, 0, 0)
    QRMS_SHAPE(4, 1, 0, 0) QRMS_SHAPE(4, 1, 0, 2)
    QRMS_SHAPE(4, 2, 0, 2) QRMS_SHAPE(4, 2, 1, 2) QRMS_SHAPE(4, 2, 2, 2) QRMS_SHAPE(4, 2, 3, 2)
    QRMS_SHAPE(4, 2, 0, 1) QRMS_SHAPE(2, 2, 0, 2) QRMS_SHAPE(8, 2, 0, 2)
  }
  return false;
}
#undef QRMS_SHAPE

template <typename T, int VPT, int LANES>
cudaError_t launch_warp(const Problem& p, int64_t rows, cudaStream_t stream) {
  const int rows_per_block = kWarpBlock / LANES;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  if (p.fused_add) {
    warp_kernel<T, VPT, LANES, true, kNarrowHints><<<static_cast<unsigned>(blocks), kWarpBlock, 0, stream>>>(p, rows);
  } else {
    warp_kernel<T, VPT, LANES, false, kNarrowHints><<<static_cast<unsigned>(blocks), kWarpBlock, 0, stream>>>(p, rows);
  }
  return cudaGetLastError();
}

template <typename T, int VPT, int LANES>
cudaError_t launch_scalar_warp(const Problem& p, int64_t rows, cudaStream_t stream) {
  const int rows_per_block = kWarpBlock / LANES;
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  if (p.fused_add) {
    scalar_warp_kernel<T, VPT, LANES, true><<<static_cast<unsigned>(blocks), kWarpBlock, 0, stream>>>(p, rows);
  } else {
    scalar_warp_kernel<T, VPT, LANES, false><<<static_cast<unsigned>(blocks), kWarpBlock, 0, stream>>>(p, rows);
  }
  return cudaGetLastError();
}

template <typename T, int VPT>
cudaError_t launch_scalar_block(const Problem& p, int64_t rows, int threads, cudaStream_t stream) {
  if (rows > 0x7fffffff) return cudaErrorInvalidConfiguration;
  if (p.fused_add) {
    scalar_block_kernel<T, VPT, true><<<static_cast<unsigned>(rows), threads, 0, stream>>>(p);
  } else {
    scalar_block_kernel<T, VPT, false><<<static_cast<unsigned>(rows), threads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

// Packs per thread for the generic block path: 4 from 256 packs up, else 2,
// doubled until the row fits in the block size limit.
int auto_vpt(int nvec, int max_vpt) {
  int vpt = nvec >= 256 ? 4 : 2;
  if (vpt > max_vpt) vpt = max_vpt;
  while (vpt < max_vpt && (nvec + vpt - 1) / vpt > max_threads(vpt)) vpt *= 2;
  return vpt;
}

const char* status(cudaError_t err) { return err == cudaSuccess ? nullptr : cudaGetErrorString(err); }

Shape decode(int config) {
  return Shape{config % 10, config / 1000, (config / 100) % 10, (config / 10) % 10};
}

// Threads per row when `vpt` packs per thread cover the row exactly in whole warps, else 0.
int exact_threads(int nvec, int vpt, int limit) {
  if (vpt <= 0 || nvec % vpt != 0) return 0;
  const int threads = nvec / vpt;
  return threads % 32 == 0 && threads <= limit ? threads : 0;
}

template <typename T>
const char* dispatch_vec(const Problem& p, int64_t rows, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const int nvec = p.hidden / kVec;
  if (p.config != 0) {  // a fixed tuning shape
    const Shape shape = decode(p.config);
    const int threads = exact_threads(nvec, shape.vpt, 1024);
    if (threads == 0 || p.nseg != 1) return "tuning configs need one segment and rows that split exactly into the packs";
    cudaError_t err = cudaSuccess;
    if (!launch_tuning_shape<T>(shape, p, rows, threads, stream, &err)) return "this tuning config is not built";
    return status(err);
  }
  if (p.vpt == 0 && nvec <= 64) {
    if (nvec <= 4) return status(launch_warp<T, 1, 4>(p, rows, stream));
    if (nvec <= 8) return status(launch_warp<T, 2, 4>(p, rows, stream));
    if (nvec <= 16) return status(launch_warp<T, 2, 8>(p, rows, stream));  // head_dim 128 in bf16
    if (nvec <= 32) return status(launch_warp<T, 2, 16>(p, rows, stream));
    return status(launch_warp<T, 2, 32>(p, rows, stream));
  }
  if (p.vpt == 0 && p.nseg == 1) {
    const int64_t small_rows = (p.fused_add ? kSmallRowsPerSmFused : kSmallRowsPerSm) * multiprocessors();
    const Shape& shape = rows > small_rows ? kLargeShape : kSmallShape;
    const int threads = exact_threads(nvec, shape.vpt, shape.vpt >= 8 ? vec_block_limit<8>() : max_threads(shape.vpt));
    if (threads != 0) {
      cudaError_t err = cudaSuccess;
      launch_auto_shape<T>(shape, p, rows, threads, stream, &err);
      return status(err);
    }
  }
  const int vpt = p.vpt ? p.vpt : auto_vpt(nvec, kMaxVptVec);
  if (vpt > kMaxVptVec) return "vectors per thread must be 0 (automatic), 1, 2 or 4";
  const int threads = ((nvec + vpt - 1) / vpt + 31) / 32 * 32;
  if (threads > max_threads(vpt)) return "hidden size too large: the row must fit in the registers of one block";
  switch (vpt) {
    case 1: return status(launch_rows<T, 1, false, false, 0, 0>(p, rows, threads, false, stream));
    case 2: return status(launch_rows<T, 2, false, false, 0, 0>(p, rows, threads, false, stream));
    case 4: return status(launch_rows<T, 4, false, false, 0, 0>(p, rows, threads, false, stream));
    default: return "vectors per thread must be 0 (automatic), 1, 2 or 4";
  }
}

template <typename T>
const char* dispatch_scalar(const Problem& p, int64_t rows, cudaStream_t stream) {
  const int n = p.hidden;
  if (p.config != 0) return "tuning configs need 16-byte aligned rows";
  if (p.vpt == 0 && n <= 64) {
    if (n <= 4) return status(launch_scalar_warp<T, 1, 4>(p, rows, stream));
    if (n <= 8) return status(launch_scalar_warp<T, 2, 4>(p, rows, stream));
    if (n <= 16) return status(launch_scalar_warp<T, 2, 8>(p, rows, stream));
    if (n <= 32) return status(launch_scalar_warp<T, 2, 16>(p, rows, stream));
    return status(launch_scalar_warp<T, 2, 32>(p, rows, stream));
  }
  const int vpt = p.vpt ? p.vpt : auto_vpt(n, kMaxVptScalar);
  const int threads = ((n + vpt - 1) / vpt + 31) / 32 * 32;
  if (threads > max_threads(vpt)) return "hidden size too large: the row must fit in the registers of one block";
  switch (vpt) {
    case 1: return status(launch_scalar_block<T, 1>(p, rows, threads, stream));
    case 2: return status(launch_scalar_block<T, 2>(p, rows, threads, stream));
    case 4: return status(launch_scalar_block<T, 4>(p, rows, threads, stream));
    case 8: return status(launch_scalar_block<T, 8>(p, rows, threads, stream));
    case 16: return status(launch_scalar_block<T, 16>(p, rows, threads, stream));
    default: return "vectors per thread must be 0 (automatic), 1, 2, 4, 8 or 16";
  }
}

template <typename T>
const char* dispatch(const Problem& p, cudaStream_t stream) {
  const int64_t rows = total_rows(p);
  if (rows == 0) return nullptr;
  if (can_vectorise(p, 16 / sizeof(T))) return dispatch_vec<T>(p, rows, stream);
  return dispatch_scalar<T>(p, rows, stream);
}

}  // namespace

int max_hidden(DType dtype, bool vectorised) {
  const int elem = dtype == DType::f32 ? 4 : 2;
  return vectorised ? max_threads(kMaxVptVec) * kMaxVptVec * (16 / elem) : max_threads(kMaxVptScalar) * kMaxVptScalar;
}

const char* launch(const Problem& problem, cudaStream_t stream) {
  if (problem.hidden <= 0) return "hidden size must be positive";
  Problem p = problem;
  p.inv_hidden = 1.0f / static_cast<float>(p.hidden);  // mean = sum * (1/hidden): exact for powers of two
  switch (p.dtype) {
    case DType::f32: return dispatch<float>(p, stream);
    case DType::f16: return dispatch<__half>(p, stream);
    case DType::bf16: return dispatch<__nv_bfloat16>(p, stream);
  }
  return "unsupported dtype";
}

}  // namespace qwen3_rmsnorm
