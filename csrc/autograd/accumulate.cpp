// Autograd for accumulate / accumulate_inplace: grad_i = w_i·grad (summed to x_i's shape), and for a weights
// tensor grad_w[i] = ⟨grad, x_i⟩. Saves the x_i only when the weights need a gradient, the weights tensor (K
// numbers) only when some x_i does; with Python-number weights, nothing but the numbers. Forward mode:
// Σ w_i·t_i (+ Σ t_w[i]·x_i for a weights tensor), plus the target's tangent for accumulate_inplace.
#include "autograd/common.h"

#include <ATen/ops/stack.h>

#include <optional>

namespace safe_ops::autograd {
namespace {

using ListSig = at::Tensor(at::TensorList, std::optional<at::ArrayRef<double>>);
using TensorWeightsSig = at::Tensor(at::TensorList, const at::Tensor&);
using ListInplaceSig = void(at::Tensor&, at::TensorList, std::optional<at::ArrayRef<double>>);
using TensorWeightsInplaceSig = void(at::Tensor&, at::TensorList, const at::Tensor&);
using ScaleManySig = std::vector<at::Tensor>(const at::Tensor&, at::ArrayRef<double>);
using ScaleManyTensorSig = std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&);
using DotManySig = at::Tensor(const at::Tensor&, at::TensorList);

struct AccumulateBackward final : Node {
  // Inputs (next edges) in order: [out] (in-place only, weight 1), x_0 .. x_{K-1}, [weights tensor].
  int64_t offset = 0;
  int64_t n_inputs = 0;         // offset + K
  ReduceShapes shapes;          // of those inputs
  std::vector<double> weights;  // K numbers, when there is no weights tensor
  // With number weights, a tensor listed several times gets its summed weight at its first listing and no
  // gradient (zero) at the others: one (Σw)·grad instead of one w_i·grad each, as the forward reads it once.
  std::vector<bool> repeated;  // K entries, or empty when no tensor repeats
  bool has_weights_tensor = false;
  SavedVariable weights_;          // saved when some x_i needs a gradient
  std::vector<SavedVariable> xs_;  // saved when the weights tensor needs a gradient

  void release_variables() override {
    weights_.reset_data();
    for (auto& x : xs_) x.reset_data();
  }
  std::string name() const override { return "safe_ops::AccumulateBackward"; }

  variable_list apply(variable_list&& grads) override {
    variable_list out(n_inputs + (has_weights_tensor ? 1 : 0));
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return out;
    const bool want_weights = has_weights_tensor && task_should_compute_output(n_inputs);
    std::vector<at::Tensor> xs;
    if (want_weights) {
      for (auto& x : xs_) xs.push_back(x.unpack());
    }
    const at::Tensor w = weights_.unpack();  // undefined when not saved
    bool composite = backward_needs_graph(grad, w);
    for (const auto& x : xs) composite = composite || has_tangent(x);

    if (want_weights) {
      if (composite) {
        std::vector<at::Tensor> dots;
        for (const auto& x : xs) dots.push_back((grad * x).sum());
        out[n_inputs] = at::stack(dots);
      } else {
        static const auto dot_many = find_op<DotManySig>(schema::dot_many);
        out[n_inputs] = dot_many.call(grad, xs);
      }
    }

    // Inputs whose gradient is w_i·grad at grad's full shape go through one fused scale_many pass.
    std::vector<int64_t> fused;
    std::vector<double> fused_weights;
    for (int64_t i = 0; i < n_inputs; ++i) {
      if (!task_should_compute_output(i)) continue;
      const int64_t k = i - offset;
      if (k >= 0 && !repeated.empty() && repeated[k]) continue;  // its weight is in the first listing's
      if (k < 0 || (!has_weights_tensor && weights[k] == 1.0)) {
        out[i] = shapes.reduce(grad, i);  // grad itself when not broadcast: no copy
        continue;
      }
      if (shapes.is_full(grad, i) && !composite) {
        fused.push_back(i);
        if (!has_weights_tensor) fused_weights.push_back(weights[k]);
        continue;
      }
      const at::Tensor reduced = shapes.reduce(grad, i);
      out[i] = has_weights_tensor ? reduced * w.select(0, k) : reduced * weights[k];
    }
    if (!fused.empty()) {
      std::vector<at::Tensor> scaled;
      if (has_weights_tensor) {
        static const auto scale_many = find_op<ScaleManyTensorSig>(schema::scale_many_weights_tensor);
        // Dispatcher ops only (no host-built index tensor), so that tracing under FakeTensor works.
        std::vector<at::Tensor> selected_weights;
        for (int64_t i : fused) selected_weights.push_back(w.select(0, i - offset));
        const at::Tensor selected = static_cast<int64_t>(fused.size()) == w.size(0) ? w : at::stack(selected_weights);
        scaled = scale_many.call(grad, selected);
      } else {
        static const auto scale_many = find_op<ScaleManySig>(schema::scale_many);
        scaled = scale_many.call(grad, fused_weights);
      }
      for (size_t j = 0; j < fused.size(); ++j) out[fused[j]] = std::move(scaled[j]);
    }
    return out;
  }
};

using AccumulateNodePtr = decltype(make_node<AccumulateBackward>());

AccumulateNodePtr make_accumulate_node(const at::Tensor* out, at::TensorList tensors,
                                       std::optional<at::ArrayRef<double>> weights, const at::Tensor* weights_tensor) {
  const bool requires_grad = torch::autograd::compute_requires_grad(tensors) ||
                             (out && torch::autograd::compute_requires_grad(*out)) ||
                             (weights_tensor && torch::autograd::compute_requires_grad(*weights_tensor));
  if (!requires_grad) return {};
  auto node = make_node<AccumulateBackward>();
  node->offset = out ? 1 : 0;
  node->n_inputs = node->offset + static_cast<int64_t>(tensors.size());
  if (out) {
    std::vector<at::Tensor> inputs{*out};
    inputs.insert(inputs.end(), tensors.begin(), tensors.end());
    node->shapes = ReduceShapes(at::TensorList(inputs));
  } else {
    node->shapes = ReduceShapes(tensors);
  }
  bool any_x_requires_grad = false;
  for (const auto& t : tensors) any_x_requires_grad = any_x_requires_grad || t.requires_grad();
  if (weights_tensor) {
    node->has_weights_tensor = true;
    if (any_x_requires_grad) node->weights_ = SavedVariable(*weights_tensor, false);
    if (weights_tensor->requires_grad()) {
      for (const auto& t : tensors) node->xs_.emplace_back(t, false);
    }
  } else {
    if (weights.has_value()) {
      node->weights.assign(weights->begin(), weights->end());
    } else {
      node->weights.assign(tensors.size(), 1.0);
    }
    for (size_t i = 1; i < tensors.size(); ++i) {
      for (size_t first = 0; first < i; ++first) {
        if (node->repeated.empty() ? false : node->repeated[first]) continue;
        if (tensors[first].is_same(tensors[i])) {
          if (node->repeated.empty()) node->repeated.assign(tensors.size(), false);
          node->repeated[i] = true;
          node->weights[first] += node->weights[i];
          break;
        }
      }
    }
  }
  torch::autograd::edge_list edges;
  if (out) edges.push_back(torch::autograd::impl::gradient_edge(*out));
  for (auto& e : torch::autograd::collect_next_edges(tensors)) edges.push_back(std::move(e));
  if (weights_tensor) edges.push_back(torch::autograd::impl::gradient_edge(*weights_tensor));
  node->set_next_edges(std::move(edges));
  return node;
}

// Forward mode: the result's tangent, undefined when no operand has one. `out`: the in-place target (weight 1).
at::Tensor accumulate_tangent(const at::Tensor* out, at::TensorList tensors,
                              std::optional<at::ArrayRef<double>> weights, const at::Tensor* weights_tensor) {
  at::Tensor t = out ? tangent_of(*out) : at::Tensor();
  const at::Tensor w = weights_tensor ? primal_of(*weights_tensor) : at::Tensor();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor x_t = tangent_of(tensors[i]);
    if (!x_t.defined()) continue;
    const int64_t k = static_cast<int64_t>(i);
    t = add_tangents(t, weights_tensor ? x_t * w.select(0, k) : scale_tangent(x_t, weights ? (*weights)[i] : 1.0));
  }
  const at::Tensor w_t = weights_tensor ? tangent_of(*weights_tensor) : at::Tensor();
  if (w_t.defined()) {
    for (size_t i = 0; i < tensors.size(); ++i) {
      t = add_tangents(t, primal_of(tensors[i]) * w_t.select(0, static_cast<int64_t>(i)));
    }
  }
  return t;
}

at::Tensor accumulate_autograd(at::TensorList tensors, std::optional<at::ArrayRef<double>> weights) {
  static const auto op = find_op<ListSig>(schema::accumulate);
  auto node = make_accumulate_node(nullptr, tensors, weights, nullptr);
  at::Tensor result = call_below_autograd(op, tensors, weights);
  attach(result, node);
  set_tangent(result, accumulate_tangent(nullptr, tensors, weights, nullptr));
  return result;
}

at::Tensor accumulate_weights_tensor_autograd(at::TensorList tensors, const at::Tensor& weights) {
  static const auto op = find_op<TensorWeightsSig>(schema::accumulate_weights_tensor);
  auto node = make_accumulate_node(nullptr, tensors, std::nullopt, &weights);
  at::Tensor result = call_below_autograd(op, tensors, weights);
  attach(result, node);
  set_tangent(result, accumulate_tangent(nullptr, tensors, std::nullopt, &weights));
  return result;
}

void accumulate_inplace_autograd(at::Tensor& out, at::TensorList tensors, std::optional<at::ArrayRef<double>> weights) {
  static const auto op = find_op<ListInplaceSig>(schema::accumulate_inplace);
  auto node = make_accumulate_node(&out, tensors, weights, nullptr);
  check_inplace(out, static_cast<bool>(node));
  at::Tensor tangent = accumulate_tangent(&out, tensors, weights, nullptr);  // before the write: out may be listed
  call_below_autograd(op, out, tensors, weights);
  after_inplace(out, node);
  set_inplace_tangent(out, std::move(tangent));
}

void accumulate_weights_tensor_inplace_autograd(at::Tensor& out, at::TensorList tensors, const at::Tensor& weights) {
  static const auto op = find_op<TensorWeightsInplaceSig>(schema::accumulate_inplace_weights_tensor);
  auto node = make_accumulate_node(&out, tensors, std::nullopt, &weights);
  check_inplace(out, static_cast<bool>(node));
  at::Tensor tangent = accumulate_tangent(&out, tensors, std::nullopt, &weights);
  call_below_autograd(op, out, tensors, weights);
  after_inplace(out, node);
  set_inplace_tangent(out, std::move(tangent));
}

}  // namespace

TORCH_LIBRARY_IMPL(safe_ops, Autograd, m) {
  m.impl(schema::accumulate.impl_name, accumulate_autograd);
  m.impl(schema::accumulate_weights_tensor.impl_name, accumulate_weights_tensor_autograd);
  m.impl(schema::accumulate_inplace.impl_name, accumulate_inplace_autograd);
  m.impl(schema::accumulate_inplace_weights_tensor.impl_name, accumulate_weights_tensor_inplace_autograd);
}

}  // namespace safe_ops::autograd
