"""Bounded-memory scoring is the old dense scoring, bit for bit (issue 11, items 1-2).

The reference functions below are the dense implementations the scoring had before: the copy
mixture and the history prior over every cell of the city. The new code adds both sparsely (at
most L cells a token): the history prior gives the same float32 values bit for bit (only sums and
products), the copy mixture the same values up to the last bit of the CPU kernels' log and
logaddexp.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trajmoe import metrics
from trajmoe.estimators._scoring import rank_blocks, rank_sparse, topk_lowest_id
from trajmoe.nn import SAMoETransformer, location_log_probs, target_log_probs
from trajmoe.nn.loss import dense_location_log_probs, generation_logits
from trajmoe.nn.retrieval import DISTANCE_EDGES, N_DISTANCE_BUCKETS, add_distance_prior, distance_buckets, first_occurrence, history_entries

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import speed  # noqa: E402  (benchmarks/speed.py)


def dense_log_generate(out, rows, cols):
    """The generation log-probabilities of the dense reference (no copy mixture)."""
    saved = out.get("copy_scores")
    try:
        out["copy_scores"] = None
        log_probs = dense_location_log_probs(out, rows, cols)
    finally:
        out["copy_scores"] = saved
    return log_probs


# ------------------------------------------------------------------ a tiny network
def network(n_cells, copy_path=True, seed=0, history_moves=False):
    """``history_moves="returns"``: the moves term and the return scorer."""
    torch.manual_seed(seed)
    model = SAMoETransformer(d_model=16, n_layers=1, n_heads=2, max_len=24, dropout=0.0, copy_path=copy_path,
                             distance_prior=True, history_prior=True, history_moves=bool(history_moves),
                             return_scorer=history_moves == "returns")
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(n_cells)
    metres = torch.stack([(i % 7).float() * 500.0, (i // 7).float() * 500.0], dim=1)
    model.register_city(0, torch.randint(0, 6, (n_cells, 34), generator=g).float(),
                        torch.randn(n_cells, 2, generator=g), torch.randint(1, 9, (n_cells,), generator=g),
                        metres=metres)
    with torch.no_grad():       # priors away from their initialisation, copy path strong
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def batch_of(n_cells, batch, length, seed, few_cells=False):
    g = torch.Generator().manual_seed(seed)
    high = min(n_cells, 4) if few_cells else n_cells + 1          # n_cells: out of vocabulary
    location = torch.randint(0, high, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    location[torch.arange(length)[None, :] >= lengths[:, None]] = -1     # trailing PAD
    return dict(location=location, slot=torch.randint(0, 48, (batch, length), generator=g),
                dow=torch.randint(1, 8, (batch, length), generator=g),
                gap=torch.randint(0, 96, (batch, length), generator=g), city=torch.zeros(batch, dtype=torch.long))


@settings(max_examples=25, deadline=None)
@given(n_cells=st.integers(1, 60), batch=st.integers(1, 4), length=st.integers(1, 12), seed=st.integers(0, 10**6),
       copy_path=st.booleans(), few_cells=st.booleans(), history_moves=st.sampled_from([False, True, "returns"]))
def test_sparse_scoring_is_the_dense_scoring_bit_for_bit(n_cells, batch, length, seed, copy_path, few_cells,
                                                         history_moves):
    model = network(n_cells, copy_path=copy_path, seed=seed % 7, history_moves=history_moves)
    inputs = batch_of(n_cells, batch, length, seed, few_cells)
    with torch.no_grad():
        out = model(**inputs)
        rows, cols = torch.nonzero(inputs["location"] >= 0, as_tuple=True)
        new, old = location_log_probs(out, rows, cols), dense_location_log_probs(out, rows, cols)
        assert torch.equal(torch.log_softmax(generation_logits(out, rows, cols), -1),
                           dense_log_generate(out, rows, cols))
    if copy_path:
        # the mixture's log and logaddexp run on [n, L] instead of [n, N]: the CPU kernels' vector
        # and scalar paths may round the last bit differently (as the dense one did by position)
        torch.testing.assert_close(new, old, rtol=3e-7, atol=1e-6)
        torch.testing.assert_close(new[old == -np.inf], old[old == -np.inf])
    else:
        assert torch.equal(new, old)


@pytest.mark.parametrize("history_moves", [False, True, "returns"])
def test_sparse_scoring_gradients_match_the_dense_ones(history_moves):
    model = network(20, copy_path=True, history_moves=history_moves).train()
    inputs = batch_of(20, 3, 10, seed=3, few_cells=True)
    grads = []
    for score in (location_log_probs, dense_location_log_probs):
        model.zero_grad()
        out = model(**inputs)
        rows, cols = torch.nonzero(inputs["location"] >= 0, as_tuple=True)
        target = inputs["location"][rows, cols].clamp(max=19)[:, None]
        score(out, rows, cols).gather(1, target).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for new, old in zip(*grads):
        torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-6)


def test_target_log_probs_still_reads_the_full_distribution():
    model = network(15, copy_path=True)
    inputs = batch_of(15, 2, 9, seed=5, few_cells=True)
    with torch.no_grad():
        out = model(**inputs)
        rows, cols = torch.nonzero(inputs["location"] >= 0, as_tuple=True)
        targets = torch.arange(len(rows)) % 15
        full = location_log_probs(out, rows, cols).gather(1, targets[:, None])[:, 0]
        torch.testing.assert_close(target_log_probs(out, rows, cols, targets), full, rtol=1e-5, atol=1e-5)


def test_first_occurrence_and_history_entries_hand_checked():
    assert first_occurrence(torch.tensor([[5, 3, 5, 5, 3], [1, 1, 1, 1, 1]])).tolist() == \
        [[0, 1, 0, 0, 1], [0, 0, 0, 0, 0]]
    location = torch.tensor([[2, 0, 2, 4, -1]])          # 4 = out of vocabulary (N = 4)
    ids, count, recency = history_entries(location, torch.tensor([0, 0]), torch.tensor([2, 3]), 4)
    # at position 2: cell 2 twice (last visit now), cell 0 once (1 stay back)
    assert ids.tolist() == [[2, 0, 4, 4, 4], [2, 0, 4, 4, 4]]
    assert count.tolist()[0] == [2.0, 1.0, 0.0, 0.0, 0.0]
    assert recency.tolist()[0] == [1.0, 0.5, 0.0, 0.0, 0.0]
    assert recency.tolist()[1] == [0.5, pytest.approx(1 / 3), 0.0, 0.0, 0.0]
    # moves from the current cell: at position 2 (cell 2), 2 -> 0 once; at 3 (out of
    # vocabulary) none; and the same entries as without them
    *same, moves = history_entries(location, torch.tensor([0, 0]), torch.tensor([2, 3]), 4, moves=True)
    assert all(torch.equal(a, b) for a, b in zip(same, (ids, count, recency)))
    assert moves.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    # 1 1 2 1 2 1, at the last position (cell 1): 1 -> 1 once, 1 -> 2 twice
    _, _, _, moves = history_entries(torch.tensor([[1, 1, 2, 1, 2, 1]]), torch.tensor([0]), torch.tensor([5]), 4,
                                     moves=True)
    assert moves.tolist() == [[1.0, 0.0, 2.0, 0.0, 0.0, 0.0]]


# ------------------------------------------------------------------ top-k and ranks
@settings(max_examples=60, deadline=None)
@given(st.data())
def test_topk_is_the_stable_argsort(data):
    n, n_cells = data.draw(st.integers(0, 6)), data.draw(st.integers(1, 30))
    levels = data.draw(st.sampled_from([2, 3, 1000]))             # many ties, or few
    values = data.draw(st.lists(st.integers(0, levels - 1), min_size=n * n_cells, max_size=n * n_cells))
    scores = np.asarray(values, np.float32).reshape(n, n_cells)
    scores[scores == 0] = -np.inf if data.draw(st.booleans()) else 0.0
    k = data.draw(st.integers(1, 40))
    top_values, top_ids = topk_lowest_id(torch.from_numpy(scores), k)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top_ids.numpy(), expected)
    np.testing.assert_array_equal(top_values.numpy(), np.take_along_axis(scores, expected, 1))
    truth = np.asarray(data.draw(st.lists(st.integers(-2, n_cells - 1), min_size=n, max_size=n)), np.int64)
    ids, _, ranks = rank_blocks(lambda index: scores[index], n, n_cells, k, truth, block=data.draw(st.integers(1, 90)))
    np.testing.assert_array_equal(ids, expected)
    ranked = truth >= -1
    np.testing.assert_array_equal(ranks[ranked], metrics.target_ranks(scores[ranked], truth[ranked]))
    assert (ranks[~ranked] == 0).all()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_topk_of_a_row_with_nan_is_an_error(k):
    # a NaN anywhere in a row: torch.topk and max rank it first; a tie of the k-th score used to
    # make the lowest-id step fail on a reshape
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, float("nan"), 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"scores contain NaN in 1 row \(e.g. rows \[1\]"):
        topk_lowest_id(scores, k)


def test_topk_ties_hand_checked():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    values, ids = topk_lowest_id(scores, 2)
    assert ids.tolist() == [[1, 2], [0, 1]] and values.tolist() == [[3.0, 3.0], [0.0, 0.0]]
    assert topk_lowest_id(scores, 9)[1].tolist() == [[1, 2, 4, 3, 0], [0, 1, 2, 3, 4]]
    # k = 1 (predict) takes the first maximum: the lowest id among the tied best
    assert topk_lowest_id(scores, 1)[1].tolist() == [[1], [0]]
    assert topk_lowest_id(torch.full((1, 3), -np.inf), 1)[1].tolist() == [[0]]
    # ranks are pessimistic: cell 2 ties with 1 and 4 at the top
    assert rank_blocks(lambda i: scores[torch.as_tensor(i)], 2, 5, None, np.array([2, -1]))[2].tolist() == \
        [3, metrics.OOV_RANK]


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_sparse_ranking_is_the_dense_ranking(data):
    n_rows, n_cells, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 25)), data.draw(st.integers(0, 6))
    levels = data.draw(st.sampled_from([2, 4, 1000]))
    base = np.asarray(data.draw(st.lists(st.integers(0, levels - 1), min_size=n_rows * n_cells,
                                         max_size=n_rows * n_cells)), np.float64).reshape(n_rows, n_cells)
    row_of = np.asarray(data.draw(st.lists(st.integers(0, n_rows - 1), min_size=n, max_size=n)), np.int64)
    pairs = data.draw(st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, n_cells - 1),
                                         st.integers(0, levels + 1)), max_size=3 * n if n else 0,
                               unique_by=lambda e: e[:2]))
    token = np.asarray([p[0] for p in pairs], np.int64)
    cell = np.asarray([p[1] for p in pairs], np.int64)
    value = np.asarray([p[2] for p in pairs], np.float64)
    dense = base[row_of].copy()
    dense[token, cell] = value
    k = data.draw(st.integers(1, 30))
    truth = np.asarray(data.draw(st.lists(st.integers(-2, n_cells - 1), min_size=n, max_size=n)), np.int64)
    ids, values, ranks = rank_sparse(base, row_of, token, cell, value, k, truth)
    ref_ids, ref_values, ref_ranks = rank_blocks(lambda i: dense[i], n, n_cells, k, truth)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(values, ref_values)
    np.testing.assert_array_equal(ranks, ref_ranks)


# ------------------------------------------------------------------ distance buckets
# the buckets as first computed (Euclidean distances, then a search over the edges): the old path
# of benchmarks/speed.py
bucketize_reference = speed.bucketize_distance_buckets


@settings(max_examples=60, deadline=None)
@given(n_cells=st.integers(1, 80), n=st.integers(1, 30), side=st.integers(1, 400),
       cell=st.sampled_from([250.0, 500.0, 1000.0]), shift=st.floats(-9e4, 9e4), seed=st.integers(0, 10**6))
def test_distance_buckets_equal_the_search_over_edges_on_a_grid(n_cells, n, side, cell, shift, seed):
    """Grid centroids (cells of 250 m to 1 km, any origin, up to 400 cells across): the log2
    arithmetic of distance_buckets gives exactly the buckets of torch.bucketize, repeated current
    cells and the unknown position (row N) included. (Such a grid has no two centroids whose
    squared distance lies within 1.5e-6 of an edge in log2, far above float32 rounding; a 100 m
    grid has pairs within 3e-7, 54 km apart, where the two computations may round differently.)"""
    g = torch.Generator().manual_seed(seed)
    ix, iy = torch.randint(0, side, (2, n_cells), generator=g).double()
    metres = torch.cat([torch.stack([ix, iy], 1) * cell + shift + cell / 2, torch.zeros(1, 2, dtype=torch.float64)])
    metres = metres.float()
    current = torch.randint(0, n_cells + 1, (n,), generator=g)
    assert torch.equal(distance_buckets(current, metres), bucketize_reference(current, metres))


def test_distance_buckets_of_half_precision_and_unmeasurable_distances():
    """float16 centroids are measured in float32 (their squared distances overflow beyond 256 m);
    a NaN or infinite distance falls in the bucket of farther cells, never a negative index."""
    metres = torch.tensor([[0.0, 0.0], [300.0, 0.0], [400.0, 0.0], [5000.0, 0.0], [0.0, 0.0]])
    current = torch.tensor([0])
    assert distance_buckets(current, metres.half()).tolist() == distance_buckets(current, metres).tolist() == [[0, 1, 1, 8]]
    odd = torch.tensor([[0.0, 0.0], [float("nan"), 0.0], [float("inf"), 0.0], [float("-inf"), 1.0], [0.0, 0.0]])
    assert distance_buckets(torch.tensor([0, 2]), odd).tolist() == [[0] + [len(DISTANCE_EDGES)] * 3,
                                                                   [len(DISTANCE_EDGES)] * 4]


@settings(max_examples=40, deadline=None)
@given(n_cells=st.integers(1, 60), n=st.integers(0, 25), seed=st.integers(0, 10**6), grad=st.booleans())
def test_add_distance_prior_is_the_gather_of_the_buckets(n_cells, n, seed, grad):
    """The grouped path of inference (one bucket row per distinct current cell) adds exactly what
    gathering the [n, N] buckets adds, repeated and unknown (row N) current cells included; under
    autograd the gradients are those of the gather."""
    g = torch.Generator().manual_seed(seed)
    metres = torch.cat([torch.randint(0, 30, (n_cells, 2), generator=g).float() * 500, torch.zeros(1, 2)])
    current = torch.randint(0, n_cells + 1, (n,), generator=g)
    current = current[torch.randint(0, max(n, 1), (n,), generator=g)] if n else current    # repeats
    logits = torch.randn(n, n_cells, generator=g)
    values = torch.randn(n, N_DISTANCE_BUCKETS, generator=g)
    expected = logits + values.gather(1, distance_buckets(current, metres))
    if not grad:
        out = add_distance_prior(logits.clone(), values, current, metres)
        assert torch.equal(out, expected)
        return
    values.requires_grad_(True)
    out = add_distance_prior(logits.clone(), values, current, metres)
    weight = torch.randn(n, n_cells, generator=g)
    (out * weight).sum().backward()
    reference = values.detach().clone().requires_grad_(True)
    ((logits + reference.gather(1, distance_buckets(current, metres))) * weight).sum().backward()
    assert torch.equal(out.detach(), expected) and torch.equal(values.grad, reference.grad)


def test_add_distance_prior_hand_checked():
    """Three cells on a line, 0, 500 m and 5 km; positions at cells 0, 0 and 2 (unknown: N = 3):
    buckets [0, 1, 8], [0, 1, 8] and the unknown bucket K-1 everywhere."""
    metres = torch.tensor([[0.0, 0.0], [500.0, 0.0], [5000.0, 0.0], [0.0, 0.0]])
    values = torch.arange(3 * N_DISTANCE_BUCKETS, dtype=torch.float32).view(3, N_DISTANCE_BUCKETS)
    with torch.no_grad():
        out = add_distance_prior(torch.zeros(3, 3), values, torch.tensor([0, 3, 0]), metres)
    k = N_DISTANCE_BUCKETS
    assert out.tolist() == [[0.0, 1.0, 8.0], [k + k - 1] * 3, [2 * k + 0.0, 2 * k + 1.0, 2 * k + 8.0]]
