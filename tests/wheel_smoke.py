"""Smoke test of an installed safe_ops wheel: `make wheel-test` runs it in a fresh venv, outside the checkout
(so the import finds the installed package): import, one op, one `_` variant, one backward, the op library."""
import os
import sys

import torch

import safe_ops

assert "site-packages" in safe_ops.__file__, f"safe_ops imported from {safe_ops.__file__}, not the installed wheel"
assert os.path.isfile(safe_ops.library_path())
a, b = torch.randn(8), torch.randn(8)
assert torch.equal(safe_ops.add(a, b, alpha=2), torch.add(a, b, alpha=2))
total = torch.zeros(8)
assert safe_ops.add_(total, a) is total and torch.equal(total, a)  # written in place
x = torch.randn(8, requires_grad=True)
safe_ops.addcmul(x, a, b, value=0.5).sum().backward()
assert torch.equal(x.grad, torch.ones(8))
t1 = torch.randn(8, requires_grad=True)
safe_ops.addcmul(b, t1, a, value=0.5).sum().backward()
assert torch.allclose(t1.grad, 0.5 * a)
print(f"wheel smoke test passed: safe_ops from {os.path.dirname(safe_ops.__file__)}, torch {torch.__version__}, "
      f"Python {sys.version.split()[0]}")
