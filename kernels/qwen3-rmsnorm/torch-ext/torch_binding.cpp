// Torch ops of qwen3-rmsnorm: argument checks, then one launch per call.
#include "torch_binding.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>

#include "rmsnorm.h"

// kernel-builder supplies these in registration.h; defined here when absent so
// the same file also builds through torch's JIT extension loader.
#ifndef TORCH_LIBRARY_EXPAND
#define TORCH_LIBRARY_EXPAND(NAME, MODULE) TORCH_LIBRARY(NAME, MODULE)
#endif
#ifndef REGISTER_EXTENSION
#include <Python.h>
#define _QRMS_CONCAT(A, B) A##B
#define _QRMS_EXPAND_CONCAT(A, B) _QRMS_CONCAT(A, B)
#define _QRMS_STRINGIFY(A) #A
#define _QRMS_TO_STRING(A) _QRMS_STRINGIFY(A)
#define REGISTER_EXTENSION(NAME)                                                                     \
  PyMODINIT_FUNC _QRMS_EXPAND_CONCAT(PyInit_, NAME)() {                                              \
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, _QRMS_TO_STRING(NAME), nullptr, 0, nullptr}; \
    return PyModule_Create(&module);                                                                 \
  }
#endif

namespace {

using qwen3_rmsnorm::DType;

// Numbers in error messages are formatted here with std::to_string, never by streaming an
// integer into the std::ostream that TORCH_CHECK builds its message with: on the H200 image
// (torch 2.11, g++ 13.3, torch's JIT loader) that integer insertion is compiled into this
// library and calls through a wrong locale facet, so a failing check segfaulted (cuda-gdb:
// basic_ostream::_M_insert<long> -> codecvt<char16_t>::do_unshift) instead of raising.
std::string num(int64_t v) { return std::to_string(v); }

std::string dims(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}
using qwen3_rmsnorm::Problem;
using qwen3_rmsnorm::Segment;

DType dtype_of(const torch::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::f32;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: TORCH_CHECK(false, name, ": dtype ", t.scalar_type(), " is not supported (bfloat16, float16, float32)");
  }
}

// Rows of the last dimension and the stride between consecutive rows; refuses
// layouts whose leading dimensions do not collapse into one stride.
std::pair<int64_t, int64_t> rows_of(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() >= 1, name, ": needs at least one dimension");
  const int64_t hidden = t.size(-1);
  TORCH_CHECK(hidden <= 1 || t.stride(-1) == 1, name, ": the last dimension must be contiguous (stride ",
              num(t.stride(-1)), "); call .contiguous() first");
  int64_t rows = 1;
  int64_t stride = hidden;
  bool have_stride = false;
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    const int64_t size = t.size(d);
    rows *= size;
    if (size == 1) continue;
    if (!have_stride) {
      stride = t.stride(d);
      have_stride = true;
      continue;
    }
    TORCH_CHECK(t.stride(d) == t.stride(d + 1) * t.size(d + 1) || t.size(d + 1) == 1, name,
                ": leading dimensions cannot be flattened into rows of one stride (sizes ", dims(t.sizes()),
                ", strides ", dims(t.strides()), "); call .contiguous() first");
  }
  return {rows, stride};
}

void check_pair(const torch::Tensor& a, const char* a_name, const torch::Tensor& b, const char* b_name) {
  TORCH_CHECK(a.device() == b.device(), b_name, ": on ", b.device(), " but ", a_name, " is on ", a.device());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), b_name, ": dtype ", b.scalar_type(), " differs from ", a_name,
              "'s ", a.scalar_type());
}

void check_input(const torch::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda(), name, ": must be a CUDA tensor (got ", x.device(), ")");
  dtype_of(x, name);
}

void check_weight(const torch::Tensor& w, const torch::Tensor& x, const char* w_name, const char* x_name) {
  check_pair(x, x_name, w, w_name);
  TORCH_CHECK(w.dim() == 1 && w.size(0) == x.size(-1), w_name, ": shape ", dims(w.sizes()), " must be [",
              num(x.size(-1)), "] (the last dimension of ", x_name, ")");
  TORCH_CHECK(w.is_contiguous(), w_name, ": must be contiguous");
}

void check_same_shape(const torch::Tensor& a, const char* a_name, const torch::Tensor& b, const char* b_name) {
  check_pair(a, a_name, b, b_name);
  TORCH_CHECK(a.sizes() == b.sizes(), b_name, ": shape ", dims(b.sizes()), " differs from ", a_name, "'s ",
              dims(a.sizes()));
}

Segment segment(torch::Tensor& out, const torch::Tensor& x, const torch::Tensor& w, const char* out_name,
                const char* x_name) {
  const auto [rows, x_stride] = rows_of(x, x_name);
  const auto out_rows = rows_of(out, out_name);
  return Segment{out.data_ptr(), x.data_ptr(), nullptr, w.data_ptr(), rows, x_stride, out_rows.second, 0};
}

void run(Problem& p, const torch::Tensor& x) {
  const int64_t hidden = x.size(-1);
  const int limit = qwen3_rmsnorm::max_hidden(p.dtype, false);
  const int vec_limit = qwen3_rmsnorm::max_hidden(p.dtype, true);
  TORCH_CHECK(hidden <= vec_limit, "hidden size ", num(hidden), " is above the supported maximum ", num(vec_limit),
              " (16-byte aligned rows) / ", limit, " (other rows)");
  p.hidden = static_cast<int>(hidden);
  const c10::cuda::CUDAGuard guard(x.device());
  const char* error = qwen3_rmsnorm::launch(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(error == nullptr, "qwen3_rmsnorm: ", error == nullptr ? "" : error, " (hidden ", num(hidden), ")");
}

void rms_norm_impl(torch::Tensor& out, const torch::Tensor& input, const torch::Tensor& weight, double epsilon,
                   int64_t vpt, int64_t config) {
  check_input(input, "input");
  check_weight(weight, input, "weight", "input");
  check_same_shape(input, "input", out, "out");
  Problem p{};
  p.seg[0] = segment(out, input, weight, "out", "input");
  p.nseg = 1;
  p.eps = static_cast<float>(epsilon);
  p.dtype = dtype_of(input, "input");
  p.vpt = static_cast<int>(vpt);
  p.config = static_cast<int>(config);
  run(p, input);
}

void fused_add_rms_norm_impl(torch::Tensor& out, const torch::Tensor& input, torch::Tensor& residual,
                             const torch::Tensor& weight, double epsilon, int64_t config) {
  check_input(input, "input");
  check_weight(weight, input, "weight", "input");
  check_same_shape(input, "input", out, "out");
  check_same_shape(input, "input", residual, "residual");
  Problem p{};
  p.seg[0] = segment(out, input, weight, "out", "input");
  const auto res_rows = rows_of(residual, "residual");
  p.seg[0].residual = residual.data_ptr();
  p.seg[0].res_stride = res_rows.second;
  p.nseg = 1;
  p.eps = static_cast<float>(epsilon);
  p.dtype = dtype_of(input, "input");
  p.fused_add = true;
  p.config = static_cast<int>(config);
  run(p, input);
}

}  // namespace

void rms_norm(torch::Tensor& out, const torch::Tensor& input, const torch::Tensor& weight, double epsilon) {
  rms_norm_impl(out, input, weight, epsilon, 0, 0);
}

void rms_norm_vpt(torch::Tensor& out, const torch::Tensor& input, const torch::Tensor& weight, double epsilon,
                  int64_t vpt) {
  rms_norm_impl(out, input, weight, epsilon, vpt, 0);
}

void rms_norm_config(torch::Tensor& out, const torch::Tensor& input, const torch::Tensor& weight, double epsilon,
                     int64_t config) {
  rms_norm_impl(out, input, weight, epsilon, 0, config);
}

void fused_add_rms_norm(torch::Tensor& out, const torch::Tensor& input, torch::Tensor& residual,
                        const torch::Tensor& weight, double epsilon) {
  fused_add_rms_norm_impl(out, input, residual, weight, epsilon, 0);
}

void fused_add_rms_norm_config(torch::Tensor& out, const torch::Tensor& input, torch::Tensor& residual,
                               const torch::Tensor& weight, double epsilon, int64_t config) {
  fused_add_rms_norm_impl(out, input, residual, weight, epsilon, config);
}

void qk_rms_norm(torch::Tensor& q_out, torch::Tensor& k_out, const torch::Tensor& q, const torch::Tensor& k,
                 const torch::Tensor& q_weight, const torch::Tensor& k_weight, double epsilon) {
  check_input(q, "q");
  check_pair(q, "q", k, "k");
  TORCH_CHECK(q.size(-1) == k.size(-1), "k: head dim ", num(k.size(-1)), " differs from q's ", num(q.size(-1)));
  check_weight(q_weight, q, "q_weight", "q");
  check_weight(k_weight, k, "k_weight", "k");
  check_same_shape(q, "q", q_out, "q_out");
  check_same_shape(k, "k", k_out, "k_out");
  Problem p{};
  p.seg[0] = segment(q_out, q, q_weight, "q_out", "q");
  p.seg[1] = segment(k_out, k, k_weight, "k_out", "k");
  p.nseg = 2;
  p.eps = static_cast<float>(epsilon);
  p.dtype = dtype_of(q, "q");
  run(p, q);
}

TORCH_LIBRARY_EXPAND(TORCH_EXTENSION_NAME, ops) {
  ops.def("rms_norm(Tensor! out, Tensor input, Tensor weight, float epsilon) -> ()");
  ops.impl("rms_norm", torch::kCUDA, &rms_norm);
  ops.def("fused_add_rms_norm(Tensor! out, Tensor input, Tensor! residual, Tensor weight, float epsilon) -> ()");
  ops.impl("fused_add_rms_norm", torch::kCUDA, &fused_add_rms_norm);
  ops.def(
      "qk_rms_norm(Tensor! q_out, Tensor! k_out, Tensor q, Tensor k, Tensor q_weight, Tensor k_weight, "
      "float epsilon) -> ()");
  ops.impl("qk_rms_norm", torch::kCUDA, &qk_rms_norm);
  ops.def("rms_norm_vpt(Tensor! out, Tensor input, Tensor weight, float epsilon, int vpt) -> ()");
  ops.impl("rms_norm_vpt", torch::kCUDA, &rms_norm_vpt);
  ops.def("rms_norm_config(Tensor! out, Tensor input, Tensor weight, float epsilon, int config) -> ()");
  ops.impl("rms_norm_config", torch::kCUDA, &rms_norm_config);
  ops.def(
      "fused_add_rms_norm_config(Tensor! out, Tensor input, Tensor! residual, Tensor weight, float epsilon, "
      "int config) -> ()");
  ops.impl("fused_add_rms_norm_config", torch::kCUDA, &fused_add_rms_norm_config);
}

REGISTER_EXTENSION(TORCH_EXTENSION_NAME)
