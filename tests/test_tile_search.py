"""The tile search (trajmoe.estimators._tiles) ranks as scoring every cell does."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trajmoe import TrajMoERegressor
from trajmoe.cli import load_city
from trajmoe.estimators._scoring import rank_blocks
from trajmoe.estimators import _neural
from trajmoe.estimators._tiles import TILE_CELLS, CellTiles, SearchTokens, rank_tokens, searchable, tile_rank
from trajmoe.nn import ranking_scores
from trajmoe.nn.retrieval import N_DISTANCE_BUCKETS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(d_model=16, n_layers=1, n_heads=2, max_epochs=1, device="cpu", random_state=0)


def random_output(seed, n_cells, width, batch, length, moves):
    """A network output of small integers (exact float32 sums: many ties) on a 500 m grid;
    ``moves="returns"``: the moves term and a return scorer's values."""
    g = torch.Generator().manual_seed(seed)

    def ints(low, high, *shape):
        return torch.randint(low, high, shape, generator=g).float()

    grid = torch.randperm(12 * 12, generator=g)[:n_cells]
    metres = torch.stack([grid // 12, grid % 12], 1).float() * 500.0
    metres = torch.cat([metres, metres.new_zeros(1, 2)])                     # the OOV row
    location = torch.randint(0, n_cells + 1, (batch, length), generator=g)  # N: out of vocabulary
    ends = torch.randint(1, length + 1, (batch,), generator=g)
    location[torch.arange(length)[None, :] >= ends[:, None]] = -1          # trailing PAD
    # repeated cells, so that the history has counts and moves
    location = torch.where((location >= 0) & (location % 3 == 0), location % 4, location)
    return {
        "query": ints(-2, 3, batch, length, width) / 2,
        "candidates": ints(-2, 3, n_cells, width),
        "candidate_bias": ints(-2, 3, n_cells) / 4,
        "distance": ints(-6, 2, batch, length, N_DISTANCE_BUCKETS),
        "cell_metres": metres,
        "location": location,
        "history": ints(-1, 3, batch, length, 3 if moves else 2),
        "copy_scores": None,
        "history_returns": ints(-3, 4, batch, length, length) if moves == "returns" else None,
    }


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), n_cells=st.integers(1, 60), width=st.integers(1, 5),
       batch=st.integers(1, 4), length=st.integers(1, 6), moves=st.sampled_from([False, True, "returns"]),
       k=st.one_of(st.none(), st.integers(1, 8)), side=st.sampled_from([400.0, 1000.0, 2500.0, 1e5]),
       with_truth=st.booleans(), with_distance=st.booleans(), with_bias=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_tile_search_equals_scoring_every_cell(seed, n_cells, width, batch, length, moves, k, side, with_truth,
                                               with_distance, with_bias, dtype):
    # small integers: every order of summation gives the same float, so the paths agree bit for bit
    out = random_output(seed, n_cells, width, batch, length, moves)
    out = {key: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for key, v in out.items()}
    if not with_distance:
        out["distance"] = None
    if not with_bias:
        out["candidate_bias"] = None
    rows, cols = torch.nonzero(out["location"] >= 0, as_tuple=True)
    rng = np.random.default_rng(seed)
    truth = rng.integers(-2, n_cells, len(rows)) if with_truth else None
    if k is None and truth is None:
        k = 1
    tiles = CellTiles(out["candidates"], out["candidate_bias"], out["cell_metres"], side=side)
    ids, values, ranks = tile_rank(out, rows, cols, tiles, k, truth, block=2 * tiles.n_tiles)
    dense = rank_blocks(lambda index: ranking_scores(out, rows[index], cols[index]).float(), len(rows), n_cells, k,
                        truth)
    for found, expected in zip((ids, values, ranks), dense):
        if expected is None:
            assert found is None
        else:
            np.testing.assert_array_equal(found, expected)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), n_cells=st.integers(1, 40),
       lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3), moves=st.sampled_from([False, True, "returns"]),
       k=st.one_of(st.none(), st.integers(1, 5)), with_truth=st.booleans())
def test_tokens_of_several_outputs_ranked_together_equal_each_output_alone(seed, n_cells, lengths, moves, k,
                                                                          with_truth):
    # the batches of one call: outputs of one city (its candidates, bias and centroids) of
    # other windows and widths; ranked at once, each token gets what scoring every cell gives
    outs = [random_output(seed + i, n_cells, 3, 2, length, moves) for i, length in enumerate(lengths)]
    for out in outs[1:]:
        out.update({key: outs[0][key] for key in ("candidates", "candidate_bias", "cell_metres")})
    tokens = [torch.nonzero(out["location"] >= 0, as_tuple=True) for out in outs]
    n = sum(len(rows) for rows, _ in tokens)
    truth = np.random.default_rng(seed).integers(-2, n_cells, n) if with_truth else None
    if k is None and truth is None:
        k = 1
    tiles = CellTiles(outs[0]["candidates"], outs[0]["candidate_bias"], outs[0]["cell_metres"], side=1000.0)
    found = rank_tokens(SearchTokens.concat([SearchTokens.of(out, *t) for out, t in zip(outs, tokens)]), tiles, k,
                        truth, block=2 * tiles.n_tiles)         # a token a block: SearchTokens.take of chunks
    start = 0
    for out, (rows, cols) in zip(outs, tokens):
        part = slice(start, start + len(rows))
        dense = rank_blocks(lambda index: ranking_scores(out, rows[index], cols[index]).float(), len(rows), n_cells,
                            k, None if truth is None else truth[part])
        for got, expected in zip(found, dense):
            if expected is None:
                assert got is None
            else:
                np.testing.assert_array_equal(got[part], expected)
        start += len(rows)


def test_tiles_hand_checked():
    # four cells in a row, 500 m apart; tiles of 1 km: {0, 1} and {2, 3}
    metres = torch.tensor([[0.0, 0.0], [500.0, 0.0], [1000.0, 0.0], [1500.0, 0.0], [0.0, 0.0]])
    tiles = CellTiles(torch.eye(4)[:, :2], None, metres, side=1000.0)
    assert tiles.n_tiles == 2 and tiles.starts == [0, 2, 4]
    assert tiles.tile_of.tolist() == [0, 0, 1, 1]
    # from cell 0 the query favours cell 1; the distance prior costs 10 per bucket beyond the first
    distance = -10.0 * torch.arange(N_DISTANCE_BUCKETS, dtype=torch.float32)
    out = {"query": torch.tensor([[[0.0, 3.0]]]), "candidates": torch.eye(4)[:, :2], "candidate_bias": None,
           "distance": distance.expand(1, 1, -1), "cell_metres": metres, "location": torch.tensor([[0]]),
           "history": None, "copy_scores": None}
    rows, cols = torch.tensor([0]), torch.tensor([0])
    bounds = tiles.bounds(out["query"][0], out["distance"][0], metres[[0]])
    # tile 0: dot product at most 3, nearest bucket 0 (the current cell): 3; tile 1: dot product at
    # most 0, its cells 1 and 1.5 km away, buckets 3 and 4, of which -30 is the larger; both plus a
    # margin of 1024 float32 epsilons of (|q| max|C| + max|D| + 1) = 184
    margin = 1024 * torch.finfo(torch.float32).eps * 184
    assert bounds.tolist() == [[pytest.approx(3.0 + margin), pytest.approx(-30.0 + margin)]]
    ids, values, ranks = tile_rank(out, rows, cols, tiles, k=2, truth=np.array([3]))
    # cell 1: 3 - 10; cell 0: 0; cell 2: 0 - 30 (bucket 3 at 1 km), cell 3: 0 - 40
    assert ids.tolist() == [[0, 1]] and values.tolist() == [[0.0, -7.0]] and ranks.tolist() == [4]


@pytest.fixture(scope="module")
def nyc_model(data_home):
    visits, _ = load_city("nyc", data_home=data_home)
    users = visits["user_id"].unique()
    train, test = visits[visits["user_id"].isin(users[:30])], visits[visits["user_id"].isin(users[300:306])]
    return TrajMoERegressor(**TINY).fit(train), test


def test_predict_scores_only_the_tiles_that_can_matter(nyc_model, monkeypatch):
    model, test = nyc_model
    labels = model.predict_topk(test, 3)[0]          # every cell (its values are log-probabilities)
    visited = []
    scores = CellTiles.scores

    def spy(self, tile, query, *args):
        visited.append(len(query))
        return scores(self, tile, query, *args)

    monkeypatch.setattr(CellTiles, "scores", spy)
    assert (model.predict(test) == labels[:, 0]).all()
    # a (token, tile) pair per token and tile of the city would be the dense path's work
    side = TILE_CELLS * model.encoder_.cities_["nyc"].grid.cell_size
    n_tiles = CellTiles(torch.zeros(model._n_locations()[0], 1), None, model.net_.module_._metres(0), side).n_tiles
    assert n_tiles > 20
    assert 0 < sum(visited) < 0.2 * len(test) * n_tiles


def test_the_batches_of_a_call_are_searched_together(nyc_model, monkeypatch):
    model, test = nyc_model
    model = copy.deepcopy(model)
    model._eval_batch_tokens = 16                       # many network batches
    expected = model.predict(test), model.target_ranks(test).to_numpy()
    calls = []
    search = _neural.rank_tokens

    def spy(tokens, *args, **kwargs):
        calls.append(len(tokens))
        return search(tokens, *args, **kwargs)

    monkeypatch.setattr(_neural, "rank_tokens", spy)
    batches = sum(1 for _ in model._iter_batches(model._visit_windows(model._visits_of(test))[1]))
    assert batches > 3
    # one search for the call's tokens, as each batch searched alone gives
    for group, n_calls in ((16384, 1), (1, batches)):
        model._search_group_tokens = group
        calls.clear()
        assert (model.predict(test) == expected[0]).all()
        assert len(calls) == n_calls and sum(calls) == len(test)
        np.testing.assert_array_equal(model.target_ranks(test).to_numpy(), expected[1])


def test_a_tile_is_scored_a_block_at_a_time(monkeypatch):
    out = {**random_output(0, 60, 3, 4, 6, moves=True), "distance": None}     # every token in one search
    rows, cols = torch.nonzero(out["location"] >= 0, as_tuple=True)
    truth = np.random.default_rng(0).integers(0, 60, len(rows))
    tiles = CellTiles(out["candidates"], out["candidate_bias"], out["cell_metres"], side=1e5)   # one tile
    expected = tile_rank(out, rows, cols, tiles, 3, truth)
    held = []
    scores = CellTiles.scores

    def spy(self, tile, query, *args):
        s = scores(self, tile, query, *args)
        held.append(s.numel())
        return s

    monkeypatch.setattr(CellTiles, "scores", spy)
    found = tile_rank(out, rows, cols, tiles, 3, truth, block=120)
    # two tokens of the tile's 60 cells at a time
    assert max(held) == 120 and len(held) >= len(rows) // 2 > 3
    for a, b in zip(found, expected):
        np.testing.assert_array_equal(a, b)


def test_outputs_that_are_not_searched():
    out = random_output(0, 10, 2, 1, 3, moves=False)
    assert searchable(out)
    assert not searchable({**out, "distance": None})
    assert not searchable({**out, "copy_scores": torch.zeros(1, 3, 3)})
    nan = out["query"].clone()
    nan[0, 0, 0] = torch.nan
    assert not searchable({**out, "query": nan})
    tiles = CellTiles(out["candidates"], out["candidate_bias"], out["cell_metres"], 1000.0)
    assert tiles.finite
    bias = out["candidate_bias"].clone()
    bias[3] = -torch.inf
    assert not CellTiles(out["candidates"], bias, out["cell_metres"], 1000.0).finite


@pytest.mark.parametrize("part", ["query", "return scorer"])
def test_a_diverged_network_is_reported_as_before(nyc_model, part):
    model, test = nyc_model
    model = copy.deepcopy(model)
    with torch.no_grad():
        if part == "query":
            model.net_.module_.query.weight[0, 0] = torch.nan
        else:                                   # the values of the window's cells only
            model.net_.module_.return_scorer.out.bias.fill_(torch.nan)
    with pytest.raises(ValueError, match="NaN"):
        model.target_ranks(test)
    # labels and top k too (before: a label from a NaN row, or a RuntimeError of a reshape)
    for call in (model.predict, lambda X: model.predict_topk(X, 5)):
        with pytest.raises(ValueError, match="scores contain NaN in .* rows .* has diverged"):
            call(test)


def test_a_double_precision_network_ranks_as_in_single(nyc_model):
    model, test = nyc_model
    labels, ranks = model.predict(test), model.target_ranks(test)
    model = copy.deepcopy(model)
    model.net_.module_.double()
    np.testing.assert_array_equal(model.predict(test), labels)
    assert (model.target_ranks(test) - ranks).abs().max() <= 1
