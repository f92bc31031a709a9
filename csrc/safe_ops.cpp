// Every op schema of the library, in one place. Kernels: csrc/<op>.cpp (CPU and CUDA, through
// csrc/kernels.h), csrc/autograd/<op>.cpp (Autograd), safe_ops/_fake.py (fake/meta).
#include <torch/library.h>

TORCH_LIBRARY(safe_ops, m) {
  // Functional ops, mirroring torch.add / sub / addcmul / lerp, and the K-way weighted sum.
  m.def("add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor");
  m.def("add.Scalar(Tensor self, Scalar other, Scalar alpha=1) -> Tensor");
  m.def("sub.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor");
  m.def("sub.Scalar(Tensor self, Scalar other, Scalar alpha=1) -> Tensor");
  m.def("accumulate(Tensor[] tensors, float[]? weights=None) -> Tensor");
  m.def("accumulate.weights_tensor(Tensor[] tensors, Tensor weights) -> Tensor");
  m.def("addcmul(Tensor self, Tensor tensor1, Tensor tensor2, *, Scalar value=1) -> Tensor");
  m.def("lerp.Scalar(Tensor self, Tensor end, Scalar weight) -> Tensor");
  m.def("lerp.Tensor(Tensor self, Tensor end, Tensor weight) -> Tensor");

  // In-place kernels: they always write into their first argument. The Python wrappers safe_ops.add_ etc.
  // call them only when the write is safe (safe_ops/_inplace.py).
  m.def("add_inplace.Tensor(Tensor(a!) self, Tensor other, *, Scalar alpha=1) -> ()");
  m.def("add_inplace.Scalar(Tensor(a!) self, Scalar other, Scalar alpha=1) -> ()");
  m.def("sub_inplace.Tensor(Tensor(a!) self, Tensor other, *, Scalar alpha=1) -> ()");
  m.def("sub_inplace.Scalar(Tensor(a!) self, Scalar other, Scalar alpha=1) -> ()");
  m.def("accumulate_inplace(Tensor(a!) out, Tensor[] tensors, float[]? weights=None) -> ()");
  m.def("accumulate_inplace.weights_tensor(Tensor(a!) out, Tensor[] tensors, Tensor weights) -> ()");
  m.def("addcmul_inplace(Tensor(a!) self, Tensor tensor1, Tensor tensor2, *, Scalar value=1) -> ()");
  m.def("lerp_inplace.Scalar(Tensor(a!) self, Tensor end, Scalar weight) -> ()");
  m.def("lerp_inplace.Tensor(Tensor(a!) self, Tensor end, Tensor weight) -> ()");

  // Backward ops: fused passes used by the autograd kernels, with their own CPU/CUDA/fake kernels so that
  // torch.compile can trace a backward.
  m.def("scale_many(Tensor grad, float[] scales) -> Tensor[]");
  m.def("scale_many.weights_tensor(Tensor grad, Tensor scales) -> Tensor[]");
  m.def("dot_many(Tensor grad, Tensor[] tensors) -> Tensor");
  m.def("addcmul_backward(Tensor grad, Tensor? tensor1, Tensor? tensor2, Scalar value, bool[2] output_mask) "
        "-> (Tensor, Tensor)");
  m.def("lerp_backward(Tensor grad, Tensor? self, Tensor? end, Tensor? weight, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)");
}
