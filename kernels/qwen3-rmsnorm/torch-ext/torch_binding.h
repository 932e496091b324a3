#pragma once
#include <torch/torch.h>

void rms_norm(torch::Tensor& out, const torch::Tensor& input, const torch::Tensor& weight, double epsilon);
void rms_norm_vpt(torch::Tensor& out, const torch::Tensor& input, const torch::Tensor& weight, double epsilon,
                  int64_t vpt);
void rms_norm_config(torch::Tensor& out, const torch::Tensor& input, const torch::Tensor& weight, double epsilon,
                     int64_t config);
void fused_add_rms_norm_config(torch::Tensor& out, const torch::Tensor& input, torch::Tensor& residual,
                               const torch::Tensor& weight, double epsilon, int64_t config);
void fused_add_rms_norm(torch::Tensor& out, const torch::Tensor& input, torch::Tensor& residual,
                        const torch::Tensor& weight, double epsilon);
void qk_rms_norm(torch::Tensor& q_out, torch::Tensor& k_out, const torch::Tensor& q, const torch::Tensor& k,
                 const torch::Tensor& q_weight, const torch::Tensor& k_weight, double epsilon);
