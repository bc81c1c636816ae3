"""The narrow product X @ W against torch's own product and its autograd, first and second order."""

import pytest
import torch

from metasparse.solvers.narrow_product import narrow_matmul


def _operands(dtype=torch.float64, m=6, d=9, k=3):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, m, d, generator=generator, dtype=dtype)
    weights = torch.randn(2, d, k, generator=generator, dtype=dtype)
    return features, weights


def test_narrow_product_passes_gradcheck_and_gradgradcheck():
    features, weights = (t.requires_grad_(True) for t in _operands())
    assert torch.autograd.gradcheck(narrow_matmul, (features, weights))
    assert torch.autograd.gradgradcheck(narrow_matmul, (features, weights))


@pytest.mark.parametrize("grad_of", ["features", "weights", "both"])
def test_narrow_product_and_its_gradients_are_those_of_matmul(grad_of):
    features, weights = _operands(torch.float32, m=75, d=640, k=5)
    features.requires_grad_(grad_of in ("features", "both"))
    weights.requires_grad_(grad_of in ("weights", "both"))
    upstream = torch.randn(2, 75, 5, generator=torch.Generator().manual_seed(1))
    inputs = [t for t in (features, weights) if t.requires_grad]

    product = narrow_matmul(features, weights)
    expected = features @ weights
    torch.testing.assert_close(product, expected, rtol=1e-5, atol=1e-4)
    for got, want in zip(torch.autograd.grad(product, inputs, upstream),
                         torch.autograd.grad(expected, inputs, upstream), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
        assert got.shape == want.shape
