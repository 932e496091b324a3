#pragma once
#include <torch/torch.h>

void vec_scale(torch::Tensor& out, const torch::Tensor& x, double alpha);
