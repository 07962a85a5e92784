"""Faults during training leave nothing half done (issue 9, case 13 and "What must exist" 4-5).

- Atomic ``fit`` and ``partial_fit``, for every estimator: an exception (a bad frame, an
  interrupt after the model was updated) leaves the estimator exactly as it was: encoder, cities,
  counts, network weights, optimizer state and history; a failed first fit leaves it unfitted.
- A NaN or infinite loss stops training with :class:`trajmoe.exceptions.NonFiniteLossError`
  naming the epoch and the batch, instead of producing a NaN model.
- A fit killed mid-epoch and started again with the same ``checkpoint_dir`` ends with the weights
  of an uninterrupted fit (exactly, on CPU), early stopping and its best weights included.

Kept fast: a slice of 6-12 users of YJMob100K city A, a closed vocabulary (only visited cells are
candidates), tiny networks (d_model 16, one layer), one torch thread.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from trajmoe import (GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline, LSTMRegressor,
                     MarkovBaseline, PopularityBaseline, SpatialSemanticEncoder, TrajMoERegressor,
                     TransformerRegressor)
from trajmoe.datasets import load_yjmob100k
from trajmoe.estimators import NeuralNextLocationEstimator
from trajmoe.exceptions import NonFiniteLossError, UnknownCityError

pytestmark = [pytest.mark.filterwarnings("ignore::trajmoe.exceptions.DataWarning"),
              pytest.mark.usefixtures("one_torch_thread")]

TINY = dict(d_model=16, n_layers=1, max_epochs=1, batch_size=8, device="cpu", random_state=0)


def closed():
    return SpatialSemanticEncoder(region_margin=None)


#: One factory per estimator: every estimator of the library.
ESTIMATORS = {
    "popularity": lambda: PopularityBaseline(encoder=closed()),
    "markov": lambda: MarkovBaseline(encoder=closed()),
    "history_frequency": lambda: HistoryFrequencyBaseline(encoder=closed()),
    "gravity": lambda: GravityBaseline(encoder=closed(), offset=500.0, random_state=0),
    "history_gravity": lambda: HistoryGravityBaseline(encoder=closed(), offset=500.0, random_state=0),
    "trajmoe": lambda: TrajMoERegressor(encoder=closed(), n_heads=2, **TINY),
    "lstm": lambda: LSTMRegressor(encoder=closed(), **TINY),
    "transformer": lambda: TransformerRegressor(encoder=closed(), n_heads=2, **TINY),
}
NEURAL = ["trajmoe", "lstm", "transformer"]


def city_a_visits():
    """Visits of 12 users of YJMob100K city A over 10 days: A (6 users) and A2 (6 others)."""
    visits = load_yjmob100k("A").visits
    visits = visits[visits["day"] < 10]
    users = visits["user_id"].unique()
    a = visits[visits["user_id"].isin(users[:6])].reset_index(drop=True)
    a2 = visits[visits["user_id"].isin(users[6:12])].reset_index(drop=True)
    return a, a2


@pytest.fixture(scope="module")
def city_a(data_home):
    return city_a_visits()


# ------------------------------------------------------------------------------- helpers
def snapshot(model):
    """Everything a fit may change, copied: attribute names, cities, the encoder's tables and
    counts, the fitted numbers and tables of the baselines, the network's weights, optimizer
    state and history."""
    state = {"attributes": sorted(vars(model))}
    if not hasattr(model, "encoder_"):
        return state
    state["cities"] = list(model.cities_)
    state["n_excluded"] = model.encoder_.n_excluded_
    state["tables"] = {c: (t.cells.copy(), t.visit_counts.copy(), t.poi_counts.copy(), t.grid)
                       for c, t in model.encoder_.cities_.items()}
    state["fitted"] = {k: copy.deepcopy(v) for k, v in vars(model).items()
                       if k.endswith("_") and k not in ("encoder_", "net_", "cities_")}
    if hasattr(model, "net_"):
        state["weights"] = {k: v.detach().clone() for k, v in model.net_.module_.state_dict().items()}
        state["optimizer"] = copy.deepcopy(model.net_.optimizer_.state_dict())
        state["history"] = [{k: v for k, v in row.items() if k != "dur"} for row in model.net_.history]
    return state


def assert_same(a, b, where="state"):
    """Recursive equality of snapshots (tensors, arrays, frames, containers, plain values)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (pd.Series, pd.DataFrame)):
        assert a.equals(b), f"{where}: frames differ"
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


class Interrupt(Callback):
    """Raise KeyboardInterrupt (Ctrl-C) once training is over: everything is updated by then."""

    def on_train_end(self, net, **kwargs):
        raise KeyboardInterrupt


def interrupt_after_update(model, monkeypatch):
    """Make the next fit/partial_fit of ``model`` raise KeyboardInterrupt after it updated the
    model: a callback after training (networks), or after the counts (baselines)."""
    if isinstance(model, NeuralNextLocationEstimator):
        model.set_params(callbacks=[("interrupt", Interrupt())])
        return
    learn = type(model)._learn

    def learn_then_interrupt(self, *args, **kwargs):
        learn(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "_learn", learn_then_interrupt)


def predictions(model, X):
    labels, scores = model.predict_topk(X, k=3)
    return labels, scores


# ---------------------------------------------------------------- atomic fit / partial_fit
@pytest.mark.parametrize("name", NEURAL)
def test_case13_partial_fit_on_one_row_of_a_new_city_fails_and_changes_nothing(name, city_a):
    """Case 13: a partial_fit that fails on one row of a new city B leaves the model as it was:
    B is not registered (predict(B) is the clear unknown-city error), A predicts as before, and a
    failing partial_fit(A.iloc[:1]) does not raise A's visit counts."""
    a, a2 = city_a
    model = ESTIMATORS[name]().fit(a)
    before, expected = snapshot(model), predictions(model, a)
    with pytest.raises(ValueError, match="No training window"):
        model.partial_fit(a.iloc[:1].assign(city="B"))
    assert_same(snapshot(model), before)
    assert model.cities_ == ["yjmob_A"]
    assert_same(predictions(model, a), expected)
    with pytest.raises(UnknownCityError, match="'B'"):
        model.predict(a.iloc[:5].assign(city="B"))
    with pytest.raises(ValueError, match="No training window"):
        model.partial_fit(a.iloc[:1])
    assert_same(snapshot(model), before)
    # the failures left no trace: the next update is the one a model without them makes
    model.partial_fit(a2)
    twin = ESTIMATORS[name]().fit(a).partial_fit(a2)
    assert_same(snapshot(model)["weights"], snapshot(twin)["weights"])
    assert_same(snapshot(model)["optimizer"], snapshot(twin)["optimizer"])


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_an_interrupted_partial_fit_changes_nothing(name, city_a, monkeypatch):
    """Ctrl-C after partial_fit updated the encoder (a new city, A's counts), the counts and the
    network: the estimator is as before the call, and predicts as before."""
    a, a2 = city_a
    model = ESTIMATORS[name]().fit(a)
    before, expected = snapshot(model), predictions(model, a)
    interrupt_after_update(model, monkeypatch)
    new = pd.concat([a2, a2.assign(city="B")], ignore_index=True)
    with pytest.raises(KeyboardInterrupt):
        model.partial_fit(new)
    model.set_params(**({"callbacks": None} if name in NEURAL else {}))
    assert_same(snapshot(model), before)
    assert_same(predictions(model, a), expected)
    assert "_updating" not in vars(model)


class InterruptAtBatch(Callback):
    """Raise KeyboardInterrupt (Ctrl-C) at the end of training batch ``n``: inside skorch's
    training loop, whose ``partial_fit`` swallows it and returns the half-trained net."""

    def __init__(self, n):
        self.n = n

    def on_batch_end(self, net, training=False, **kwargs):
        self.seen_ = getattr(self, "seen_", 0) + bool(training)
        if self.seen_ == self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("name", NEURAL)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_an_interrupt_during_a_batch_is_raised_and_changes_nothing(name, method, city_a):
    """Ctrl-C in the middle of training: fit and partial_fit raised nothing and returned the
    weights of the interrupted batch (skorch keeps them); now the KeyboardInterrupt propagates
    and the estimator is as before the call."""
    a, a2 = city_a
    model = ESTIMATORS[name]().fit(a)
    before, expected = snapshot(model), predictions(model, a)
    model.set_params(callbacks=[("interrupt", InterruptAtBatch(2))], batch_size=4, finetune_batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        getattr(model, method)(a2)
    model.set_params(callbacks=None, batch_size=ESTIMATORS[name]().batch_size,
                     finetune_batch_size=ESTIMATORS[name]().finetune_batch_size)
    assert_same(snapshot(model), before)
    assert_same(predictions(model, a), expected)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_an_interrupted_refit_keeps_the_previous_fit(name, city_a, monkeypatch):
    a, a2 = city_a
    model = ESTIMATORS[name]().fit(a)
    before, expected = snapshot(model), predictions(model, a)
    interrupt_after_update(model, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        model.fit(a2)
    model.set_params(**({"callbacks": None} if name in NEURAL else {}))
    assert_same(snapshot(model), before)
    assert_same(predictions(model, a), expected)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_a_failed_first_fit_leaves_the_estimator_unfitted(name, city_a, monkeypatch):
    a, _ = city_a
    model = ESTIMATORS[name]()
    params = dict(vars(model))
    interrupt_after_update(model, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        model.fit(a)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    assert set(vars(model)) == set(params)


@pytest.mark.parametrize("name", ["gravity", "trajmoe"])
def test_a_fit_that_fails_after_fitting_the_encoder_leaves_no_fitted_attribute(name, city_a):
    """Realistic failures after the encoder was fitted: no held-out user with a target (gravity),
    no training window (networks). Before, the encoder stayed fitted."""
    a, _ = city_a
    one_user = a[a["user_id"] == a["user_id"].iloc[0]].iloc[:3]
    model = ESTIMATORS[name]()
    with pytest.raises(ValueError):
        model.fit(one_user)
    assert not [k for k in vars(model) if k.endswith("_")]
    fitted = ESTIMATORS[name]().fit(a)
    before = snapshot(fitted)
    with pytest.raises(ValueError):
        fitted.fit(one_user)
    assert_same(snapshot(fitted), before)


def test_fit_and_partial_fit_of_every_estimator_are_atomic():
    """Every estimator class of the library, present and future, gets atomic fits from the base."""
    import trajmoe.estimators as module
    from trajmoe.estimators import NextLocationEstimator

    classes = [getattr(module, name) for name in module.__all__]
    classes = [c for c in classes if isinstance(c, type) and issubclass(c, NextLocationEstimator)
               and c is not NextLocationEstimator]
    assert {c.__name__ for c in classes} >= {type(make()).__name__ for make in ESTIMATORS.values()}
    for cls in classes:
        for method in ("fit", "partial_fit"):
            assert getattr(getattr(cls, method), "_atomic", False), f"{cls.__name__}.{method}"


# ----------------------------------------------------------------------- NaN / inf losses
def test_a_diverging_fit_stops_with_a_clear_error_and_no_nan_model(city_a):
    a, _ = city_a
    model = TrajMoERegressor(encoder=closed(), n_heads=2, **{**TINY, "max_epochs": 3}, lr=1e10, clip_grad=None)
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf|-inf) at epoch \d+, training batch \d+") as info:
        model.fit(a)
    assert isinstance(info.value, FloatingPointError) and isinstance(info.value, ValueError)
    assert "lr" in str(info.value)
    with pytest.raises(NotFittedError):
        check_is_fitted(model)


def test_the_error_names_the_epoch_and_batch_of_the_first_nan(city_a, monkeypatch):
    """A NaN injected into the loss of the 2nd training batch of epoch 2 (after a clean epoch 1):
    the error names exactly that batch, and a failing partial_fit leaves the weights as they were
    (no NaN weight)."""
    a, _ = city_a
    params = dict(n_heads=2, **{**TINY, "max_epochs": 2}, validation_fraction=0.0)
    batches = len(ESTIMATORS["trajmoe"]().set_params(**params).fit(a).net_.history[0]["batches"])
    assert batches >= 2
    get_loss = NeuralNet.get_loss
    calls = {"n": 0}

    def nan_loss(self, y_pred, y_true, *args, **kwargs):
        loss = get_loss(self, y_pred, y_true, *args, **kwargs)
        if self.module_.training:
            calls["n"] += 1
            if calls["n"] == target:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(NeuralNet, "get_loss", nan_loss)
    target = batches + 2
    with pytest.raises(NonFiniteLossError, match="training loss is nan at epoch 2, training batch 2:"):
        ESTIMATORS["trajmoe"]().set_params(**params).fit(a)
    model = ESTIMATORS["trajmoe"]().set_params(**params).fit(a)
    before = snapshot(model)
    calls["n"], target = 0, 1
    with pytest.raises(NonFiniteLossError, match="at epoch 3, training batch 1:"):
        model.partial_fit(a)
    assert_same(snapshot(model), before)
    assert all(torch.isfinite(w).all() for w in model.net_.module_.state_dict().values() if w.is_floating_point())


# ---------------------------------------------------------------- checkpoints and resuming
class KillAt(Callback):
    """Raise (as a killed job would stop) in the given epoch, after the given training batch."""

    def __init__(self, epoch, batch):
        self.epoch = epoch
        self.batch = batch

    def on_batch_end(self, net, training=None, **kwargs):
        if training and len(net.history) == self.epoch and len(net.history[-1]["batches"]) >= self.batch:
            raise RuntimeError("killed")


class SigKillAt(KillAt):
    """Kill the process (SIGKILL: no exception, no cleanup) in the given epoch and batch."""

    def on_batch_end(self, net, training=None, **kwargs):
        if training and len(net.history) == self.epoch and len(net.history[-1]["batches"]) >= self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class CountEpochs(Callback):
    def initialize(self):
        self.epochs_ = 0
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.epochs_ += 1


#: Dropout on, validation on held-out users, the step schedule (max_epochs >= 3) and early
#: stopping whose threshold (2 % better) makes it stop before max_epochs with its best epoch
#: before the last, so that resuming must restore the patience used up and the best weights
#: (a case of these data and settings: with the history prior's moves term this run trains all 8
#: epochs, so the case keeps the prior it was built with).
RESUMABLE = dict(encoder=closed(), n_heads=2, d_model=16, n_layers=1, dropout=0.1, max_epochs=8, batch_size=8,
                 patience=2, validation_fraction=0.25, device="cpu", random_state=0,
                 callbacks__early_stopping__threshold=0.02, history_moves=False)


@pytest.fixture(scope="module")
def uninterrupted(city_a, tmp_path_factory):
    a, a2 = city_a
    X = pd.concat([a, a2], ignore_index=True)
    model = TrajMoERegressor(**RESUMABLE, checkpoint_dir=tmp_path_factory.mktemp("whole")).fit(X)
    history = model.history_
    assert len(history) < RESUMABLE["max_epochs"] and best_epoch(model) < len(history), history  # a meaningful case
    return X, model


def best_epoch(model):
    """The epoch whose weights early stopping restored."""
    return dict(model.net_.callbacks_)["early_stopping"].best_epoch_


@pytest.mark.parametrize("kill_epoch", ["best + 1", "last"])
def test_a_fit_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(kill_epoch, uninterrupted, tmp_path):
    X, whole = uninterrupted
    n_epochs = len(whole.history_)
    best = best_epoch(whole)
    epoch = best + 1 if kill_epoch == "best + 1" else n_epochs
    killed = TrajMoERegressor(**RESUMABLE, checkpoint_dir=tmp_path, callbacks=[("kill", KillAt(epoch, 2))])
    with pytest.raises(RuntimeError, match="killed"):
        killed.fit(X)
    with pytest.raises(NotFittedError):          # atomic: the failed fit left no half-trained model
        check_is_fitted(killed)
    assert len(json.loads((tmp_path / "history.json").read_text())) == epoch - 1
    resumed = TrajMoERegressor(**RESUMABLE, checkpoint_dir=tmp_path, callbacks=[("count", CountEpochs())]).fit(X)
    assert dict(resumed.net_.callbacks_)["count"].epochs_ == n_epochs - epoch + 1   # only the rest trained
    assert_same(snapshot(resumed)["weights"], snapshot(whole)["weights"])
    pd.testing.assert_frame_equal(resumed.history_.drop(columns="dur"), whole.history_.drop(columns="dur"))
    np.testing.assert_array_equal(resumed.predict_topk(X.iloc[:200], k=3)[1], whole.predict_topk(X.iloc[:200], k=3)[1])


def test_a_finished_checkpoint_returns_its_model_and_another_run_is_refused(uninterrupted, tmp_path):
    X, whole = uninterrupted
    done = whole.checkpoint_dir
    again = TrajMoERegressor(**RESUMABLE, checkpoint_dir=done, callbacks=[("count", CountEpochs())]).fit(X)
    assert dict(again.net_.callbacks_)["count"].epochs_ == 0
    assert_same(snapshot(again)["weights"], snapshot(whole)["weights"])
    with pytest.raises(ValueError, match="another training run"):
        TrajMoERegressor(**{**RESUMABLE, "lr": 2e-3}, checkpoint_dir=done).fit(X)
    with pytest.raises(ValueError, match="another training run"):
        TrajMoERegressor(**RESUMABLE, checkpoint_dir=done).fit(X.iloc[:-50])


@pytest.mark.parametrize("make", [
    lambda **kw: LSTMRegressor(**{k: v for k, v in RESUMABLE.items() if k not in ("n_heads", "history_moves")},
                               monitor="valid_loss", **kw),
    lambda **kw: TrajMoERegressor(**RESUMABLE, cell_embedding=True, **kw)], ids=["lstm_ids", "trajmoe_cell_embedding"])
def test_per_city_tables_resume_as_an_uninterrupted_fit_and_keep_training(make, city_a, tmp_path):
    # the per-city learned tables (location IDs, residual cell embedding) stay the optimizer's
    # parameters when a state is loaded into them (was: new Parameter objects, left untrained)
    a, a2 = city_a
    X = pd.concat([a, a2], ignore_index=True)
    whole = make(checkpoint_dir=tmp_path / "whole").fit(X)
    with pytest.raises(RuntimeError, match="killed"):
        make(checkpoint_dir=tmp_path / "run", callbacks=[("kill", KillAt(2, 2))]).fit(X)
    resumed = make(checkpoint_dir=tmp_path / "run").fit(X)
    assert_same(snapshot(resumed)["weights"], snapshot(whole)["weights"])
    module = whole.net_.module_
    table = module.city0_id_in if hasattr(module, "city0_id_in") else module.city0_residual
    before = table.detach().clone()
    whole.set_params(finetune_frozen=()).partial_fit(a)        # early stopping loaded its best weights at the end
    assert (table.detach() - before).abs().max() > 0


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_a_process_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_one(uninterrupted, tmp_path):
    """A real kill: the fit runs in another process, SIGKILLed in the middle of an epoch."""
    X, whole = uninterrupted
    epoch = best_epoch(whole) + 1
    script = (
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import pandas as pd\n"
        "import test_training_faults as t\n"
        "X = pd.concat(t.city_a_visits(), ignore_index=True)\n"
        f"model = t.TrajMoERegressor(**t.RESUMABLE, checkpoint_dir={str(tmp_path)!r},\n"
        f"                           callbacks=[('kill', t.SigKillAt({epoch}, 2))])\n"
        "model.fit(X)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(json.loads((tmp_path / "history.json").read_text())) == epoch - 1
    resumed = TrajMoERegressor(**RESUMABLE, checkpoint_dir=tmp_path).fit(X)
    assert_same(snapshot(resumed)["weights"], snapshot(whole)["weights"])
