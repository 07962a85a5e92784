"""The FLOP formula of benchmarks/throughput.py counts what the network computes (issue 11)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import throughput  # noqa: E402

from trajmoe.nn import SAMoETransformer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("copy_path", [False, True])
def test_flop_formula_equals_the_counted_matrix_products(copy_path):
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    d, n_layers, n_cells, batch, length = 32, 2, 50, 3, 7
    module = SAMoETransformer(d_model=d, n_layers=n_layers, n_heads=4, copy_path=copy_path,
                              distance_prior=True, history_prior=True).eval()
    module.register_city(0, torch.rand(n_cells, 34), torch.rand(n_cells, 2), torch.randint(1, 9, (n_cells,)),
                         metres=torch.rand(n_cells, 2) * 1000)
    location = torch.randint(0, n_cells, (batch, length))
    X = dict(location=location, slot=torch.randint(0, 48, location.shape), dow=torch.randint(1, 8, location.shape),
             gap=torch.randint(0, 96, location.shape), city=torch.zeros(batch, dtype=torch.long))
    with FlopCounterMode(display=False) as counter:
        out = module(**X)
        out["query"].reshape(-1, d) @ out["candidates"].T          # the scores of every cell
    # the counter leaves out the CPU attention kernel (causal: c = position + 1 of every token)
    # and the matrix-vector products of the tower's cross layers
    context = batch * length * (length + 1) // 2
    # the copy scores are counted for every (t, j), the formula counts j <= t
    attention = n_layers * 4 * 4 * d * context + (2 * d * (context - batch * length ** 2) if copy_path else 0)
    cross = n_cells * 2 * 2 * d
    assert counter.get_total_flops() + attention + cross == throughput.model_flops(module, location, n_cells)
    # padding tokens are not counted: a padded batch counts as its valid tokens alone
    padded = torch.cat([location, location.new_full((batch, 3), -1)], dim=1)
    assert throughput.model_flops(module, padded, n_cells) == throughput.model_flops(module, location, n_cells)


def test_log_log_slope():
    x = np.array([1.0, 10.0, 100.0])
    assert throughput.slope(x, 3 * x) == pytest.approx(1.0)
    assert throughput.slope(x, x ** 0.5) == pytest.approx(0.5)
    assert throughput.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a/b": 1, "a/c/d": 2, "e": 3}
