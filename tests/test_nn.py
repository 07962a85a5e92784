"""Tests of trajmoe.nn: the SAMoE transformer, its router, copy path and loss (tiny sizes, CPU)."""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch

from trajmoe.nn import (
    PRESETS,
    LSTMNetwork,
    TransformerNetwork,
    SAMoEBlock,
    SAMoETransformer,
    STARRouter,
    TrajMoELoss,
    location_log_probs,
    target_log_probs,
)

N_CELLS = 30
P = 34


def city_tables(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    poi = torch.randint(0, 6, (n, P), generator=g).float()
    coords = torch.randn(n, 2, generator=g)
    rank = torch.randint(1, 9, (n,), generator=g)
    return poi, coords, rank


def make_model(n=N_CELLS, **kwargs):
    torch.manual_seed(0)
    params = dict(d_model=16, n_layers=2, n_heads=2, max_len=12, dropout=0.0)
    model = SAMoETransformer(**{**params, **kwargs})
    model.register_city(0, *city_tables(n))
    return model.eval()


def make_batch(batch=3, length=8, n=N_CELLS, city=0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        location=torch.randint(0, n, (batch, length), generator=g),
        slot=torch.randint(0, 48, (batch, length), generator=g),
        dow=torch.randint(1, 8, (batch, length), generator=g),
        gap=torch.randint(0, 96, (batch, length), generator=g),
        city=torch.full((batch,), city),
    )


def all_positions(batch, length):
    rows, cols = torch.meshgrid(torch.arange(batch), torch.arange(length), indexing="ij")
    return rows.reshape(-1), cols.reshape(-1)


def with_changed(batch, key, row, col, value):
    changed = {k: v.clone() for k, v in batch.items()}
    changed[key][row, col] = value
    return changed


# --------------------------------------------------------------------------- shapes and masks
@pytest.mark.parametrize("copy_path", [True, False])
def test_output_shapes(copy_path):
    model = make_model(copy_path=copy_path)
    batch = make_batch(batch=3, length=8)
    out = model(**batch)
    assert out["query"].shape == (3, 8, 16)
    assert out["time_logits"].shape == (3, 8, 96)
    assert out["candidates"].shape == (N_CELLS, 16)
    assert torch.equal(out["location"], batch["location"])
    assert out["gates"].shape == (3, 8, 3)
    if copy_path:
        assert out["copy_scores"].shape == (3, 8, 8)
        assert out["gate"].shape == (3, 8)
    else:
        assert out["copy_scores"] is None and out["gate"] is None
    rows, cols = all_positions(3, 8)
    assert location_log_probs(out, rows, cols).shape == (24, N_CELLS)


@pytest.mark.parametrize("key,value", [("location", 7), ("slot", 40), ("dow", 2), ("gap", 95)])
def test_causality(key, value):
    model = make_model()
    batch = make_batch()
    batch[key][1, 5] = (value + 1) % 7  # make sure the perturbation below is a change
    out = model(**batch)
    changed = model(**with_changed(batch, key, 1, 5, value))
    for name in ("query", "time_logits", "gate", "gates"):
        torch.testing.assert_close(changed[name][:, :5], out[name][:, :5], rtol=0, atol=0)
        assert not torch.allclose(changed[name][1, 5:], out[name][1, 5:])
    assert torch.equal(changed["copy_scores"][:, :5], out["copy_scores"][:, :5])
    # other rows of the batch are untouched at every position
    torch.testing.assert_close(changed["query"][[0, 2]], out["query"][[0, 2]], rtol=0, atol=0)


def test_trailing_pad_does_not_change_valid_positions():
    model = make_model()
    batch = make_batch(batch=2, length=8)
    short = {k: (v[:, :5] if v.dim() == 2 else v) for k, v in batch.items()}
    padded = {k: v.clone() for k, v in batch.items()}
    padded["location"][:, 5:] = -1
    padded["slot"][:, 5:] = 999  # garbage time features at PAD positions are ignored
    padded["dow"][:, 5:] = 0
    out_short, out_padded = model(**short), model(**padded)
    for name in ("query", "time_logits", "gate", "gates"):
        torch.testing.assert_close(out_padded[name][:, :5], out_short[name], rtol=1e-5, atol=1e-6)
    # PAD cells are never copyable
    assert torch.isneginf(out_padded["copy_scores"][:, :, 5:]).all()


@pytest.mark.parametrize("options", [{}, {"experts": False}, {"shared_expert": False}, {"top_k": 2}])
def test_block_skips_pad_tokens_without_changing_valid_ones(options):
    """With the valid mask, a block's FFNs and router run on the real tokens only: the same values
    there as without the mask, no FFN update and zero gates at PAD tokens."""
    torch.manual_seed(0)
    block = SAMoEBlock(d_model=16, n_heads=2, dropout=0.0, **options).eval()
    batch, length = 3, 6
    h, t0 = torch.randn(4 * batch, length, 16), torch.randn(batch, length, 16)
    valid = torch.arange(length)[None, :] < torch.tensor([[6], [2], [4]])
    full, full_gates = block(h, t0)
    skipped, gates = block(h, t0, valid)
    streams = valid.repeat(4, 1)
    torch.testing.assert_close(skipped[streams], full[streams], rtol=1e-5, atol=1e-6)
    attention_only = h + block.attn(block.ln1(h))
    torch.testing.assert_close(skipped[~streams], attention_only[~streams], rtol=0, atol=0)
    if full_gates is not None:
        torch.testing.assert_close(gates[valid], full_gates[valid], rtol=1e-5, atol=1e-6)
        assert (gates[~valid] == 0).all()
    same, _ = block(h, t0, torch.ones(batch, length, dtype=torch.bool))
    assert torch.equal(same, full)


def test_streams_share_weights_but_never_attend_to_each_other():
    torch.manual_seed(0)
    block = SAMoEBlock(d_model=16, n_heads=2, dropout=0.0).eval()
    batch, length = 2, 6
    h = torch.randn(4 * batch, length, 16)
    t0 = torch.randn(batch, length, 16)
    out, _ = block(h, t0)
    h2 = h.clone()
    h2[:batch] += torch.randn(batch, length, 16)  # perturb the POI stream only
    out2, _ = block(h2, t0)
    torch.testing.assert_close(out2[batch : 3 * batch], out[batch : 3 * batch], rtol=0, atol=0)
    assert not torch.allclose(out2[:batch], out[:batch])
    # the trajectory stream reads the POI expert's output through the router (by design)
    assert (out2[3 * batch :] - out[3 * batch :]).abs().max() > 1e-6


def test_oov_token_is_input_only():
    model = make_model()
    batch = make_batch()
    batch["location"][0, 2] = N_CELLS  # out of vocabulary
    out = model(**batch)
    assert out["candidates"].shape[0] == N_CELLS == model.n_locations(0)
    assert torch.isfinite(out["query"]).all()
    assert torch.isneginf(out["copy_scores"][0, 2:, 2]).all()  # never copied
    assert torch.isfinite(out["copy_scores"][0, 3:, 3]).all()  # a real cell is copyable
    rows, cols = all_positions(3, 8)
    assert location_log_probs(out, rows, cols).shape[1] == N_CELLS
    # the OOV row is learned (rank 0) and differs from an empty real cell
    known = model(**with_changed(batch, "location", 0, 2, 0))
    assert not torch.allclose(known["query"][0, 2], out["query"][0, 2])
    with pytest.raises(ValueError, match="location ids"):
        model(**with_changed(batch, "location", 0, 2, N_CELLS + 1))


def test_no_copyable_history_forces_gate_to_one():
    model = make_model()
    batch = make_batch()
    batch["location"][:, 0] = N_CELLS  # first token OOV: nothing to copy at position 0
    out = model(**batch)
    assert torch.equal(out["gate"][:, 0], torch.ones(3))
    assert (out["gate"][:, 1:] < 1).all()
    rows, cols = torch.arange(3), torch.zeros(3, dtype=torch.long)
    logits = out["query"][rows, cols] @ out["candidates"].T
    torch.testing.assert_close(location_log_probs(out, rows, cols), torch.log_softmax(logits, -1))


# ------------------------------------------------------------------------ copy path and log-probs
def hand_built_output(location, scores_last, gate_last, n=10, d=4):
    """One sequence; the last position's copy scores and gate are given, query = 0 (uniform)."""
    length = len(location)
    scores = torch.full((1, length, length), float("-inf"))
    scores[0, -1] = torch.tensor(scores_last)
    gate = torch.ones(1, length)
    gate[0, -1] = gate_last
    return {
        "query": torch.zeros(1, length, d),
        "candidates": torch.randn(n, d),
        "location": torch.tensor([location]),
        "copy_scores": scores,
        "gate": gate,
    }


def test_copy_path_hand_built():
    rows, cols = torch.tensor([0]), torch.tensor([2])
    # huge score on history cell 5, gate ~0 -> all mass on cell 5
    out = hand_built_output([3, 5, 7], [0.0, 1e4, 0.0], 1e-6)
    log_p = location_log_probs(out, rows, cols)[0]
    assert abs(log_p[5].item()) < 1e-5
    torch.testing.assert_close(log_p[0], torch.tensor(math.log(1e-6 / 10)))
    # equal scores, cell 4 twice in history, gate 0.5: p(4) = 0.5/10 + 0.5*2/3, p(9) = 0.05 + 0.5/3
    out = hand_built_output([4, 4, 9], [0.0, 0.0, 0.0], 0.5)
    p = location_log_probs(out, rows, cols)[0].exp()
    torch.testing.assert_close(p[4], torch.tensor(0.05 + 1 / 3))
    torch.testing.assert_close(p[9], torch.tensor(0.05 + 1 / 6))
    torch.testing.assert_close(p[0], torch.tensor(0.05))
    targets = torch.tensor([4])
    torch.testing.assert_close(target_log_probs(out, rows, cols, targets), p[4:5].log())
    # masked history entries (-inf) carry no copy mass
    out = hand_built_output([4, 6, 9], [float("-inf"), 0.0, float("-inf")], 0.0)
    p = location_log_probs(out, rows, cols)[0].exp()
    assert p[6].item() == pytest.approx(1.0, abs=1e-6) and p[4].item() < 1e-10


@pytest.mark.parametrize("copy_path", [True, False])
def test_log_probs_normalised_and_target_log_probs_consistent(copy_path):
    model = make_model(copy_path=copy_path)
    batch = make_batch()
    batch["location"][1, 6:] = -1
    out = model(**batch)
    rows, cols = all_positions(3, 8)
    log_p = location_log_probs(out, rows, cols)
    torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(24), rtol=0, atol=1e-5)
    targets = torch.randint(0, N_CELLS, (24,))
    torch.testing.assert_close(
        target_log_probs(out, rows, cols, targets), log_p.gather(1, targets[:, None])[:, 0]
    )


# --------------------------------------------------------------------------- router
@pytest.mark.parametrize(
    "router,selector,shared_gate",
    [
        ("star", "soft", True),
        ("star", "hard", False),
        ("star", "none", True),
        ("spatial", "soft", True),
        ("temporal", "soft", True),
    ],
)
def test_router_gates_are_distributions(router, selector, shared_gate):
    model = make_model(router=router, selector=selector, shared_gate=shared_gate)
    gates = model(**make_batch())["gates"]
    assert (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(3, 8))


def test_hard_selector_is_one_hot_with_straight_through_gradient():
    torch.manual_seed(0)
    router = STARRouter(d_model=8, selector="hard", shared_gate=False)
    z, t0 = torch.randn(4, 5, 8), torch.randn(4, 5, 8)
    w = router.selector_weights(z, t0)
    assert set(w.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(w.sum(-1), torch.ones(4, 5))
    g = router(z, t0)
    g_s, g_t = router.spatial_gate(z), router.temporal_gate(t0)
    expected = torch.where(w[..., :1] == 1, g_s, g_t)
    torch.testing.assert_close(g, expected, rtol=0, atol=0)
    (g * torch.randn_like(g)).sum().backward()
    assert router.selector.weight.grad.abs().sum() > 0


def test_shared_gate_uses_one_linear():
    shared = STARRouter(d_model=8, shared_gate=True)
    separate = STARRouter(d_model=8, shared_gate=False)
    assert shared.temporal is None and separate.temporal is not None
    t0 = torch.randn(2, 8)
    torch.testing.assert_close(shared.temporal_gate(t0), torch.softmax(shared.spatial(t0), -1))


# --------------------------------------------------------------------------- ablations and training
ABLATIONS = [
    {},
    {"experts": False},
    {"shared_expert": False},
    {"router": "spatial"},
    {"router": "temporal"},
    {"selector": "hard"},
    {"selector": "none"},
    {"shared_gate": False},
    {"copy_path": False},
    {"time_in_trajectory": True},
    {"poi_transform": "raw"},
]


def targets_for(batch, n=N_CELLS, seed=2):
    g = torch.Generator().manual_seed(seed)
    shape = batch["location"].shape
    next_location = torch.randint(0, n, shape, generator=g)
    next_location[:, -1] = -100
    return {"next_location": next_location, "next_gap": torch.randint(0, 96, shape, generator=g)}


def ablation_id(options):
    return ",".join(f"{k}={v}" for k, v in options.items()) or "default"


@pytest.mark.parametrize("options", ABLATIONS, ids=ablation_id)
def test_ablation_builds_runs_and_backpropagates(options):
    model = make_model(**options).train()
    batch = make_batch()
    out = model(**batch)
    if options.get("experts") is False:
        assert out["gates"] is None
    loss = TrajMoELoss()(out, targets_for(batch))
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_loss_decreases_when_overfitting_a_tiny_batch():
    model = make_model().train()
    batch, y = make_batch(batch=4), targets_for(make_batch(batch=4))
    loss_fn = TrajMoELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = loss_fn(model(**batch), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(N_CELLS) + math.log(96), rel=0.1)  # ~uniform at init
    assert losses[-1] < 0.6 * losses[0]


def test_loss_matches_hand_computation_and_ignores_targets():
    model = make_model()
    batch = make_batch()
    y = targets_for(batch)
    y["next_gap"][0] = -100
    out = model(**batch)
    rows, cols = (y["next_location"] != -100).nonzero(as_tuple=True)
    targets = y["next_location"][rows, cols, None]
    nll = -location_log_probs(out, rows, cols).gather(1, targets).mean()
    keep = y["next_gap"] != -100
    ce = torch.nn.functional.cross_entropy(out["time_logits"][keep], y["next_gap"][keep])
    torch.testing.assert_close(TrajMoELoss(time_weight=0.5)(out, y), nll + 0.5 * ce)
    empty = {k: torch.full_like(v, -100) for k, v in y.items()}
    zero = TrajMoELoss()(out, empty)
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="targets"):
        TrajMoELoss()(out, {**y, "next_location": torch.full_like(y["next_location"], N_CELLS)})


# --------------------------------------------------------------------------- size and init
def test_base_preset_parameter_count():
    """Base = 4 layers, d 512, 4 heads, P 34; the paper quotes ~41 M.

    Counted by hand: time embeddings (48+8+96+144)d; input embeddings (P+1)d + 3d + 9d; tower
    (d + d/2) + 9d/4 + (P+1)d/4 + 4d (cross) + 8d^2+5d (MLP) + 2d^2+d (projection); per block
    2 LayerNorms 4d, attention 4d^2+4d, four experts 4(8d^2+5d), router 3d+3 and 4d+2; final
    LayerNorm 2d, W_q d^2, time head 96d+96; the copy path d^2+d+1 plus one recency bias per position (max_len) and the successor weight (not
    in the paper).
    """
    d, layers = 512, 4
    per_block = 4 * d + 4 * d * d + 4 * d + 4 * (8 * d * d + 5 * d) + 3 * d + 3 + 4 * d + 2
    faithful = (
        296 * d + (P + 1) * d + 12 * d
        + (d + d // 2) + 9 * d // 4 + (P + 1) * d // 4 + 4 * d + 8 * d * d + 5 * d + 2 * d * d + d
        + layers * per_block + 2 * d + d * d + 96 * d + 96
    )
    model = SAMoETransformer.from_preset("base", copy_path=False)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"base preset: {n_params:,} parameters without copy path")
    assert n_params == faithful == 40_941_428
    assert 40e6 < n_params < 42e6
    with_copy = SAMoETransformer.from_preset("base")
    assert sum(p.numel() for p in with_copy.parameters()) == faithful + d * d + d + 1 + 144 + 1
    assert PRESETS["small"] == dict(d_model=64, n_layers=2, n_heads=4)


def test_initialisation_scales():
    torch.manual_seed(0)
    model = SAMoETransformer(d_model=64, n_layers=2, n_heads=4)
    residual = 0.02 / math.sqrt(4)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.out_proj.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.blocks[1].ffn.out_weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.blocks[1].ffn.in_weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.query.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.time_head.bias.abs().sum() == 0


def test_invalid_options_raise():
    with pytest.raises(ValueError, match="router"):
        SAMoETransformer(router="bogus")
    with pytest.raises(ValueError, match="divisible"):
        SAMoETransformer(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="preset"):
        SAMoETransformer.from_preset("huge")
    model = make_model()
    batch = make_batch(length=13)
    with pytest.raises(ValueError, match="max_len"):
        model(**batch)


# --------------------------------------------------------------------------- cities and persistence
def test_register_second_city_and_replace():
    model = make_model()
    model.register_city(1, *city_tables(17, seed=5))
    assert model.cities == (0, 1) and model.n_locations(1) == 17
    assert model.city1_poi.shape == (18, P) and model.city1_rank[-1] == 0  # OOV row
    batch = make_batch(n=17, city=1)
    out = model(**batch)
    assert out["candidates"].shape == (17, 16)
    rows, cols = all_positions(3, 8)
    assert location_log_probs(out, rows, cols).shape == (24, 17)
    assert model(**make_batch())["candidates"].shape == (N_CELLS, 16)
    model.register_city(1, *city_tables(9))
    assert model.n_locations(1) == 9
    mixed = make_batch()
    mixed["city"][1] = 1
    with pytest.raises(ValueError, match="ONE city"):
        model(**mixed)
    with pytest.raises(ValueError, match="not registered"):
        model(**make_batch(city=4))


def test_register_city_validates_tables():
    model = make_model()
    poi, coords, rank = city_tables(5)
    with pytest.raises(ValueError, match="poi must have shape"):
        model.register_city(1, poi[:, :10], coords, rank)
    with pytest.raises(ValueError, match=">= 0"):
        model.register_city(1, -poi - 1, coords, rank)
    with pytest.raises(ValueError, match="rank bins"):
        model.register_city(1, poi, coords, rank + 8)
    with pytest.raises(ValueError, match="coords must have shape"):
        model.register_city(1, poi, coords[:4], rank)
    assert model.cities == (0,)


def test_pickle_and_deepcopy_round_trip():
    model = make_model()
    model.register_city(2, *city_tables(11))
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        for city, n in ((0, N_CELLS), (2, 11)):
            batch = make_batch(n=n, city=city)
            a, b = model(**batch), clone(**batch)
            for key in ("query", "time_logits", "candidates", "copy_scores", "gate", "gates"):
                assert torch.equal(a[key], b[key]), key


def test_state_dict_round_trip_adopts_registered_cities():
    model = make_model()
    model.register_city(1, *city_tables(13))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = SAMoETransformer(d_model=16, n_layers=2, n_heads=2, max_len=12, dropout=0.0).eval()
    fresh.register_city(1, *city_tables(4))  # a stale table of another shape is replaced
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.cities == (0, 1) and fresh.n_locations(1) == 13
    batch = make_batch(n=13, city=1)
    assert torch.equal(fresh(**batch)["query"], model(**batch)["query"])
    assert torch.equal(fresh(**batch)["candidates"], model(**batch)["candidates"])


def test_copy_recency_bias_shifts_copy_mass_to_recent_stays():
    """With equal content scores, a positive bias for 'one stay back' makes the previous
    stay's cell the most likely copy target (hand-built: cells 3, 5, 7, query at t = 2)."""
    torch.manual_seed(0)
    model = SAMoETransformer(d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    model.register_city(0, torch.rand(10, 34), torch.randn(10, 2), torch.randint(1, 9, (10,)))
    with torch.no_grad():
        model.copy_key.weight.zero_()          # content scores all 0: only the bias differs
        model.copy_recency.zero_()
        model.copy_recency[1] = 0.05           # one stay back (x PRIOR_SCALE = 100)
    batch = dict(location=torch.tensor([[3, 5, 7]]), slot=torch.tensor([[10, 12, 14]]),
                 dow=torch.tensor([[1, 1, 1]]), gap=torch.tensor([[0, 4, 4]]), city=torch.tensor([0]))
    scores = model(**batch)["copy_scores"][0, 2]
    weights = torch.softmax(scores, dim=0)
    assert torch.allclose(scores, torch.tensor([0.0, 5.0, 0.0]))
    assert weights.argmax().item() == 1        # the stay at position 1 (cell 5)


# --------------------------------------------------------------------------- neural baselines
def make_baseline(cls, **kwargs):
    torch.manual_seed(0)
    model = cls(d_model=16, n_layers=2, max_len=12, dropout=0.0, **kwargs)
    model.register_city(0, *city_tables(N_CELLS))
    return model.eval()


@pytest.mark.parametrize("cls", [LSTMNetwork, TransformerNetwork])
def test_baseline_networks_share_the_retrieval_head_and_are_causal(cls):
    model = make_baseline(cls)
    batch = make_batch()
    out = model(**batch)
    assert out["query"].shape == (3, 8, 16) and out["candidates"].shape == (N_CELLS, 16)
    assert out["time_logits"].shape == (3, 8, 96)
    assert out["copy_scores"] is None and out["gate"] is None and out["gates"] is None
    changed = model(**with_changed(batch, "location", 1, 5, 0 if batch["location"][1, 5] else 1))
    assert torch.equal(changed["query"][:, :5], out["query"][:, :5])    # the past ignores the future
    assert not torch.equal(changed["query"][1, 5:], out["query"][1, 5:])
    log_p = location_log_probs(out, *all_positions(3, 8))
    torch.testing.assert_close(log_p.logsumexp(-1), torch.zeros(24))


@pytest.mark.parametrize("cls", [LSTMNetwork, TransformerNetwork])
def test_baseline_networks_load_a_state_dict_with_its_cities(cls):
    model = make_baseline(cls, copy_path=True)
    clone = cls(d_model=16, n_layers=2, max_len=12, dropout=0.0, copy_path=True).eval()
    clone.load_state_dict(model.state_dict())
    batch = make_batch()
    torch.testing.assert_close(clone(**batch)["copy_scores"], model(**batch)["copy_scores"])


@pytest.mark.parametrize("k", [1, 2])
def test_sparse_top_k_router_keeps_exactly_k_experts(k):
    model = make_model(top_k=k).train()
    out = model(**make_batch())
    gates = out["gates"]
    assert ((gates > 0).sum(-1) == k).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(3, 8))
    model.eval()
    torch.testing.assert_close(model(**make_batch())["gates"], model(**make_batch())["gates"])  # no noise


def test_sparse_top_k_must_be_a_number_of_specialists():
    with pytest.raises(ValueError, match="top_k"):
        STARRouter(16, top_k=4)


def test_router_and_selector_names_are_checked():
    """A misspelt selector behaved as "hard" and a misspelt router failed only in forward."""
    with pytest.raises(ValueError, match=r"selector must be one of \('soft', 'hard', 'none'\), got 'sof'"):
        STARRouter(8, selector="sof")
    with pytest.raises(ValueError, match=r"router must be one of \('star', 'spatial', 'temporal'\), got 'spatail'"):
        STARRouter(8, router="spatail")


def test_successor_term_scores_what_followed_earlier_visits_to_the_current_cell():
    model = make_model()
    batch = make_batch(batch=1, length=6)
    batch["location"] = torch.tensor([[4, 7, 4, 9, 4, 7]])
    base = model(**batch)["copy_scores"]
    with torch.no_grad():
        model.copy_successor.fill_(0.05)   # x PRIOR_SCALE = 100
    diff = model(**batch)["copy_scores"] - base
    expected = torch.zeros(6, 6)
    # x_t = 4 at t = 0, 2, 4: stays that followed an earlier 4 are j = 1 (7) and j = 3 (9), causally
    expected[2, 1] = expected[4, 1] = expected[4, 3] = 5.0
    # x_t = 7 at t = 5: the stay after the 7 at j = 1 is j = 2
    expected[5, 2] = 5.0
    # x_t = 9 at t = 3: nothing followed an earlier 9
    finite = torch.isfinite(base[0])
    torch.testing.assert_close(diff[0][finite], expected[finite])
    assert torch.equal(finite, torch.ones(6, 6, dtype=torch.bool).tril())


# ------------------------------------------------------------- spatial options (issue: learn space)
from trajmoe.nn.embeddings import SinusoidalCoordinates  # noqa: E402
from trajmoe.nn.loss import generation_logits  # noqa: E402
from trajmoe.nn.retrieval import DISTANCE_EDGES, N_DISTANCE_BUCKETS, distance_buckets  # noqa: E402


def grid_metres(n, side=6, cell=500.0):
    """Centroids of the first n cells of a side x side grid of 500 m cells, in metres."""
    i = torch.arange(n)
    return torch.stack([(i % side).float() * cell, (i // side).float() * cell], dim=1)


def test_distance_buckets_hand_checked():
    metres = torch.cat([grid_metres(4, side=2), torch.zeros(1, 2)])     # 2 x 2 cells + OOV row
    buckets = distance_buckets(torch.tensor([0, 3, 4]), metres)
    # from cell 0: itself, two edge neighbours (500 m), the diagonal (707 m)
    assert buckets[0].tolist() == [0, 1, 1, 2]
    assert buckets[1].tolist() == [2, 1, 1, 0]
    assert buckets[2].tolist() == [N_DISTANCE_BUCKETS - 1] * 4       # unknown current cell
    far = distance_buckets(torch.tensor([0]), torch.tensor([[0.0, 0.0], [200_000.0, 0.0], [0.0, 0.0]]))
    assert far.tolist() == [[0, len(DISTANCE_EDGES)]]


def test_sinusoidal_coordinates_are_translation_aware():
    enc = SinusoidalCoordinates(n_scales=8)
    points = torch.tensor([[0.0, 0.0], [300.0, 0.0], [20_000.0, 0.0]])
    feats = enc(points)
    assert feats.shape == (3, 48) and enc.n_features == 48
    # every (sin, cos) pair lies on the unit circle, so the dot product is a sum of cosines of offsets
    assert torch.allclose(feats[:, :24] ** 2 + feats[:, 24:] ** 2, torch.ones(3, 24), atol=1e-5)
    near, far = feats[0] @ feats[1], feats[0] @ feats[2]
    assert near > far


def spatial_model(n=N_CELLS, **kwargs):
    torch.manual_seed(0)
    params = dict(d_model=16, n_layers=1, n_heads=2, max_len=12, dropout=0.0)
    model = SAMoETransformer(**{**params, **kwargs})
    model.register_city(0, *city_tables(n), metres=grid_metres(n))
    return model.eval()


def test_distance_prior_starts_as_a_gravity_law_and_sums_to_one():
    model = spatial_model(distance_prior=True, copy_path=False)
    with torch.no_grad():
        model.query.weight.zero_()          # no dot product, no modulation: the prior alone
        model.distance_gate.weight.zero_()
    batch = make_batch(batch=1, length=1)
    batch["location"][:] = 7                # cell (1, 1) of the 6 x 6 grid
    with torch.no_grad():
        out = model(**batch)
    logits = generation_logits(out, torch.tensor([0]), torch.tensor([0]))[0]
    assert int(logits.argmax()) == 7
    # the edge neighbours beat the diagonal ones, which beat cells 2 km away
    assert logits[1] == logits[6] == logits[8] == logits[13]
    assert logits[13] > logits[0] > logits[4 * 6 + 1]
    # each bucket starts at -1.5 log(d + 250 m) of its grid distance d, the current cell at 0
    # (from the buckets' lower edges instead, an edge neighbour would start level with the current cell)
    gravity = lambda d: -1.5 * math.log((d + 250.0) / 250.0)  # noqa: E731
    # cells 13 (500 m), 0 (707 m), 19 (1 km) and 25 (1.5 km, in the bucket of 1,414 m)
    for cell, metres in ((13, 500.0), (0, 500.0 * math.sqrt(2)), (19, 1000.0), (25, 1000.0 * math.sqrt(2))):
        assert float(logits[cell] - logits[7]) == pytest.approx(gravity(metres), abs=1e-5), cell
    rows, cols = all_positions(1, 1)
    assert torch.allclose(location_log_probs(out, rows, cols).exp().sum(-1), torch.ones(1), atol=1e-5)


def test_spatial_options_need_metric_coordinates():
    model = SAMoETransformer(d_model=16, n_layers=1, n_heads=2, max_len=12, distance_prior=True)
    with pytest.raises(ValueError, match="metres"):
        model.register_city(0, *city_tables(5))
    with pytest.raises(ValueError, match="coord_encoding"):
        SAMoETransformer(d_model=16, n_layers=1, n_heads=2, coord_encoding="polar")


def test_cell_embedding_is_zero_for_a_new_city_and_kept_when_the_vocabulary_grows():
    model = spatial_model(cell_embedding=True, coord_encoding="sinusoidal")
    assert torch.equal(model.city0_residual, torch.zeros(N_CELLS, 16))
    with torch.no_grad():
        model.city0_residual.copy_(torch.arange(N_CELLS, dtype=torch.float)[:, None].expand(-1, 16))
    # the vocabulary grows by one cell inserted at row 0: old rows move down by one
    keep = torch.cat([torch.tensor([-1]), torch.arange(N_CELLS)])
    changed = model.register_city(0, *city_tables(N_CELLS + 1), metres=grid_metres(N_CELLS + 1), keep=keep)
    assert changed
    assert model.city0_residual[0].abs().sum() == 0
    assert torch.equal(model.city0_residual[1:, 0], torch.arange(N_CELLS, dtype=torch.float))
    # registering the same city again with unchanged tables keeps the learned parameters
    assert not model.register_city(0, *city_tables(N_CELLS + 1), metres=grid_metres(N_CELLS + 1))


@pytest.mark.parametrize("network", [LSTMNetwork, TransformerNetwork])
def test_tied_id_embeddings_score_cells_by_their_input_embeddings(network):
    torch.manual_seed(0)
    model = network(d_model=16, n_layers=1, max_len=12, dropout=0.0, location_ids=True, tie_embeddings=True)
    model.register_city(0, *city_tables(N_CELLS))
    assert not hasattr(model, "city0_id_out")
    out = model(**make_batch())
    assert torch.equal(out["candidates"], model.city0_id_in[:N_CELLS])       # the OOV input row is no candidate
    # the loss reaches a cell's input row through its use as a candidate, also for a cell no token holds
    batch = make_batch()
    unused = sorted(set(range(N_CELLS)) - set(batch["location"].flatten().tolist()))[0]
    out = model(**batch)
    (out["query"].sum(dim=(0, 1)) @ out["candidates"][unused]).backward()
    assert model.city0_id_in.grad[unused].abs().sum() > 0
    fresh = network(d_model=16, n_layers=1, max_len=12, dropout=0.0, location_ids=True, tie_embeddings=True)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.city_encoding(0)["candidates"], model.city0_id_in[:N_CELLS])
    with pytest.raises(ValueError, match="needs location_ids=True"):
        network(d_model=16, n_layers=1, max_len=12, dropout=0.0, tie_embeddings=True)


@pytest.mark.parametrize("network", [LSTMNetwork, TransformerNetwork])
def test_location_id_baselines_learn_ids_and_round_trip(network):
    torch.manual_seed(0)
    model = network(d_model=16, n_layers=1, max_len=12, dropout=0.0, location_ids=True)
    model.register_city(0, *city_tables(N_CELLS))
    assert model.city0_id_in.shape == (N_CELLS + 1, 16) and model.city0_id_out.shape == (N_CELLS, 16)
    out = model(**make_batch())
    assert torch.equal(out["candidates"], model.city0_id_out)
    # a cell's input depends on its ID only: two cells with identical features embed differently
    batch = make_batch(batch=1, length=1)
    first = model(**batch)["query"]
    batch["location"][:] = (batch["location"] + 1) % N_CELLS
    assert not torch.allclose(first, model(**batch)["query"])
    fresh = network(d_model=16, n_layers=1, max_len=12, dropout=0.0, location_ids=True)
    fresh.load_state_dict(model.state_dict())
    fresh.eval(), model.eval()
    assert torch.equal(fresh(**make_batch())["query"], model(**make_batch())["query"])


def test_history_prior_starts_as_history_frequency():
    model = spatial_model(history_prior=True, copy_path=False)
    with torch.no_grad():
        model.query.weight.zero_()
        model.history_gate.weight.zero_()
    batch = make_batch(batch=1, length=4)
    batch["location"] = torch.tensor([[5, 9, 5, 2]])
    out = model(**batch)
    logits = generation_logits(out, torch.tensor([0, 0]), torch.tensor([2, 3])).detach()
    # after 5, 9, 5: cell 5 (2 visits, current: recency 1) > 9 (1 visit, recency 1/2) > never visited
    assert logits[0, 5] == pytest.approx(2 + 1) and logits[0, 9] == pytest.approx(1 + 0.5)
    assert logits[0, 0] == 0 and logits[0, 2] == 0
    # after 5, 9, 5, 2: cell 2 is current (1 visit, recency 1); cell 5 last seen 1 stay back
    assert logits[1, 2] == pytest.approx(2) and logits[1, 5] == pytest.approx(2 + 0.5)


def test_history_moves_start_at_their_prior_and_need_the_history_prior():
    """The network refuses moves without the history prior (the estimator ignores them then)."""
    from trajmoe.nn.retrieval import MOVES_PRIOR

    model = spatial_model(history_prior=True, history_moves=True, copy_path=False)
    with torch.no_grad():
        model.query.weight.zero_()
        model.history_gate.weight.zero_()
    batch = make_batch(batch=1, length=5)
    batch["location"] = torch.tensor([[5, 9, 5, 9, 5]])
    out = model(**batch)
    assert out["history"].shape == (1, 5, 3)
    logits = generation_logits(out, torch.tensor([0]), torch.tensor([4])).detach()
    # at 5 again: 5 three visits (current), 9 two (1 stay back) and two moves 5 -> 9
    assert logits[0, 5] == pytest.approx(3 + 1) and logits[0, 9] == pytest.approx(2 + 0.5 + 2 * MOVES_PRIOR)
    with pytest.raises(ValueError, match="history_prior=True"):
        spatial_model(history_moves=True, copy_path=False)


def test_return_features_hand_checked():
    """At 5 again after 5, 9, 5, 9 (cells 5 and 9 of a 6 x 6 grid of 500 m, 1,118 m apart)."""
    from trajmoe.nn.retrieval import history_entries
    from trajmoe.nn.returns import ReturnScorer

    location = torch.tensor([[5, 9, 5, 9, 5]])
    metres = torch.cat([grid_metres(N_CELLS), torch.zeros(1, 2)])            # the OOV row last
    ids, *counts = history_entries(location, torch.tensor([0]), torch.tensor([4]), N_CELLS, moves=True)
    f = ReturnScorer.features(ids, *counts, torch.tensor([5]), torch.tensor([4]), metres, N_CELLS)
    assert f.shape == (1, 5, 8) and ids.tolist() == [[5, 9, N_CELLS, N_CELLS, N_CELLS]]
    far = math.log1p(math.hypot(1000, 500) / 500)
    expected = [[math.log1p(3), 1.0, 0.0, 0.0, 3 / 5, 0.0, math.log1p(4), 1.0],      # the current cell
                [math.log1p(2), 0.5, math.log1p(2), far, 2 / 5, 1.0, math.log1p(4), 0.0]]
    torch.testing.assert_close(f[0, :2], torch.tensor(expected))
    # an unknown current cell: no distance, no current cell
    f = ReturnScorer.features(ids, *counts, torch.tensor([N_CELLS]), torch.tensor([4]), metres, N_CELLS)
    assert f[0, :2, 3].tolist() == [0.0, 0.0] and f[0, :2, 7].tolist() == [0.0, 0.0]


def test_return_scorer_starts_at_zero_and_scores_the_window_cells_only():
    from trajmoe.nn.retrieval import RULE_SCALE

    model = spatial_model(distance_prior=True, history_prior=True, history_moves=True, return_scorer=True,
                          copy_path=False)
    batch = make_batch(batch=2, length=6)
    rows, cols = all_positions(2, 6)
    out = model(**batch)                              # trainable: computed, zero at the start
    assert out["history_returns"].shape == (2, 6, 6) and not out["history_returns"].any()
    with torch.no_grad():
        assert model(**batch)["history_returns"] is None          # zero and not learning: skipped
        out = model(**batch)
        out["history_returns"] = torch.zeros(2, 6, 6)
        without = dict(out, history_returns=None)
        assert torch.equal(generation_logits(out, rows, cols), generation_logits(without, rows, cols))
        model.return_scorer.out.bias.fill_(0.25)
        out = model(**batch)
        gained = generation_logits(out, rows, cols) - generation_logits(dict(out, history_returns=None), rows, cols)
    for i, (b, t) in enumerate(zip(rows.tolist(), cols.tolist())):
        window = set(batch["location"][b, :t + 1].tolist())
        inside = torch.tensor([c in window for c in range(N_CELLS)])
        torch.testing.assert_close(gained[i, inside], torch.full((int(inside.sum()),), 0.25 * RULE_SCALE))
        assert not gained[i, ~inside].any()
    with pytest.raises(ValueError, match="history_moves=True"):
        spatial_model(history_prior=True, return_scorer=True, copy_path=False)


def test_return_scorer_skips_pad_positions_and_its_entries_serve_the_scoring_paths():
    """The scorer reads the window's entries at real positions only; history_terms reuses them
    and gives what it computes without them (count, recency, moves and the scorer's value)."""
    from trajmoe.nn.retrieval import history_terms

    model = spatial_model(distance_prior=True, history_prior=True, history_moves=True, return_scorer=True,
                          copy_path=False)
    batch = make_batch(batch=3, length=6)
    batch["location"][1, 4:] = -1                     # trailing PAD: rows of 6, 4 and 1 real positions
    batch["location"][2, 1:] = -1
    with torch.no_grad():
        model.return_scorer.out.bias.fill_(0.25)
        out = model(**batch)
    pad = batch["location"] < 0
    assert out["history_returns"][pad].eq(0).all() and out["history_returns"][~pad].ne(0).any()
    ids = out["history_entries"][0]
    assert ids[pad].eq(N_CELLS).all() and all(t[pad].eq(0).all() for t in out["history_entries"][1:])
    rows, cols = torch.nonzero(~pad, as_tuple=True)
    kept = history_terms(out, rows, cols, N_CELLS)
    again = history_terms(dict(out, history_entries=None), rows, cols, N_CELLS)
    assert torch.equal(kept[0], again[0]) and torch.equal(kept[1], again[1])
    assert len(kept[2]) == 4 and all(torch.equal(a, b) for a, b in zip(kept[2], again[2]))


def test_networks_pickled_before_the_return_scorer_still_score():
    model = spatial_model(distance_prior=True, history_prior=True, history_moves=True, copy_path=False)
    del model.return_scorer                           # as unpickled from a version without it
    with torch.no_grad():
        assert model(**make_batch())["history_returns"] is None


@pytest.mark.parametrize("copy_path", [False, True])
def test_learned_weight_scales_the_learned_terms_only(copy_path):
    """learned_weight w: logits = priors + w x (q . C, W_d h, W_h h, copy q . key), the same as
    scaling the query and the two modulations by w; the time logits stay as trained; w = 0
    leaves the priors alone."""
    model = spatial_model(distance_prior=True, history_prior=True, copy_path=copy_path)
    with torch.no_grad():
        model.rank_bias.normal_()                       # a prior term that w must not touch
    batch = make_batch()
    rows, cols = all_positions(3, 8)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        for name in ("query", "distance_gate", "history_gate"):
            layer = getattr(scaled, name)
            layer.weight.mul_(0.3)
            if layer.bias is not None:
                layer.bias.mul_(0.3)
    with torch.no_grad():
        pooled = model(**batch, learned_weight=0.3)
        torch.testing.assert_close(location_log_probs(pooled, rows, cols),
                                   location_log_probs(scaled(**batch), rows, cols))
        assert torch.equal(pooled["time_logits"], model(**batch)["time_logits"])
        assert not torch.allclose(location_log_probs(pooled, rows, cols), location_log_probs(model(**batch), rows, cols))
        if not copy_path:
            zeroed = copy.deepcopy(model)
            for name in ("query", "distance_gate", "history_gate"):
                getattr(zeroed, name).weight.zero_()
                if getattr(zeroed, name).bias is not None:
                    getattr(zeroed, name).bias.zero_()
            torch.testing.assert_close(generation_logits(model(**batch, learned_weight=0.0), rows, cols),
                                       generation_logits(zeroed(**batch), rows, cols))


@pytest.mark.parametrize("copy_path", [False, True])
def test_bf16_autocast_trains_and_scores(copy_path):
    """Under bf16 autocast (``benchmarks/throughput.py --device cuda``; checked here with the CPU's
    autocast) the score product is bf16 and the priors added to it float32: a training step and
    the inference scores of every prior run, finite, and close to the float32 loss."""
    model = spatial_model(distance_prior=True, history_prior=True, history_moves=True, copy_path=copy_path).train()
    batch = make_batch(batch=3)
    y = targets_for(batch)
    loss_fn = TrajMoELoss()
    reference = loss_fn(model(**batch), y).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(model(**batch), y)
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(reference, rel=0.05)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    rows, cols = all_positions(3, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = location_log_probs(model.eval()(**batch), rows, cols).float()
    assert scores.shape == (24, N_CELLS) and torch.isfinite(scores).all()


def test_steps_may_skip_parameters_only_with_sparse_routing_or_tables_of_several_cities():
    """What data-parallel training is told (find_unused_parameters): the default network uses every
    parameter in every step."""
    assert not make_model().may_skip_parameters()
    assert make_model(top_k=2).may_skip_parameters()          # experts that routing does not choose
    tables = make_model(cell_embedding=True)
    assert not tables.may_skip_parameters()                   # one city: its table is in every step
    tables.register_city(1, *city_tables(9))
    assert tables.may_skip_parameters()


def test_loss_targets_must_be_one_per_position_and_none_at_pad():
    """Targets of another shape were matched to the wrong positions (a [3, 5] next_location on a
    [3, 8] batch trained without error); a target at a PAD position was scored."""
    model = make_model()
    batch = make_batch()
    out = model(**batch)
    gap = torch.randint(0, 96, (3, 8))
    for bad, name in ((dict(next_location=torch.randint(0, N_CELLS, (3, 5)), next_gap=gap), "next_location"),
                      (dict(next_location=torch.randint(0, N_CELLS, (3, 8)), next_gap=gap.T), "next_gap")):
        with pytest.raises(ValueError, match=rf"{name} targets have shape .* and the batch \[3, 8\]"):
            TrajMoELoss()(out, bad)
    batch["location"][1, 6:] = -1
    out = model(**batch)
    with pytest.raises(ValueError, match=r"next_location has targets at PAD positions .* windows \[1\]"):
        TrajMoELoss()(out, dict(next_location=torch.randint(0, N_CELLS, (3, 8)), next_gap=torch.full((3, 8), -100)))


def test_forward_refuses_tokens_it_would_read_wrong():
    model = make_model()
    cases = [
        (dict(location=lambda b: b["location"].index_fill(1, torch.tensor([0]), -1)), r"rows \[0, 1, 2\] have a PAD "
         r"token \(location -1\) before a real one"),
        (dict(slot=lambda b: b["slot"].fill_(48)), r"slot ids must be in 0\.\.47"),
        (dict(gap=lambda b: b["gap"].fill_(-3)), r"gap ids must be in 0\.\.95"),
        (dict(location=lambda b: b["location"].float()), r"location must be an integer tensor"),
        (dict(dow=lambda b: b["dow"][:, :4]), r"dow has shape \(3, 4\), and location \(3, 8\)"),
        (dict(city=lambda b: torch.full((3,), 0.7)), r"city must hold integer indices"),
    ]
    for change, message in cases:
        batch = make_batch()
        batch.update({k: f(batch) for k, f in change.items()})
        with pytest.raises(ValueError, match=message):
            model(**batch)
    batch = make_batch()
    batch["location"][0, 5:] = -1                          # right padding, with any time ids there
    batch["slot"][0, 5:] = 99
    assert torch.isfinite(model(**batch)["time_logits"]).all()


def test_register_city_checks_keep_and_drops_what_an_earlier_registration_left():
    model = make_model(cell_embedding=True)
    poi, coords, rank = city_tables(6, seed=3)
    residual = model.city0_residual.detach().clone()
    for keep, message in (([0, 1, 2], r"keep must hold one integer per new cell, shape \[6\]"),
                          ([0.0, 1, 2, 3, 4, 5], "keep must hold one integer"),
                          ([0, 1, 2, 3, 4, 99], r"in 0\.\.29, or -1 for a new cell; got values \[99\]")):
        with pytest.raises(ValueError, match=message):
            model.register_city(0, poi, coords, rank, keep=keep)
        assert model.city0_poi.shape[0] == N_CELLS + 1 and torch.equal(model.city0_residual, residual)
    model.register_city(0, poi, coords, rank, keep=[3, -1, 0, 1, 2, 29])
    assert model.city0_residual.shape == (6, 16)
    with_metres = SAMoETransformer(d_model=16, n_layers=1, n_heads=2, max_len=12, coord_encoding="linear")
    with_metres.register_city(0, *city_tables(10), metres=torch.randn(10, 2))
    with_metres.register_city(0, *city_tables(4))
    assert "city0_metres" not in with_metres.state_dict()


def test_a_float64_model_loads_a_float32_state():
    """The load hook made the city tables float32 again, and forward failed on mixed dtypes."""
    state = make_model(cell_embedding=True).state_dict()
    clone = SAMoETransformer(d_model=16, n_layers=2, n_heads=2, max_len=12, dropout=0.0, cell_embedding=True).double()
    clone.load_state_dict(state)
    assert clone.city0_poi.dtype == torch.float64 and clone.city0_residual.dtype == torch.float64
    assert clone.city0_rank.dtype == torch.int64
    assert clone.eval()(**make_batch())["time_logits"].dtype == torch.float64


def test_city_batches_need_a_positive_int_batch_size():
    from trajmoe.nn.data import CityBatchSampler

    for bad in (0, -1, 2.7, True):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            CityBatchSampler(torch.zeros(5, dtype=torch.long).numpy(), torch.ones(5, dtype=torch.long).numpy(), bad)
