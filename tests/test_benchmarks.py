"""The benchmark harness scores models as the library does: derived protocols, paired margins."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _harness import Scorer, Target, few_shot_sample, markdown_tables, paired_margins, task_list  # noqa: E402

from trajmoe import HistoryFrequencyBaseline, TrajMoERegressor, metrics  # noqa: E402
from trajmoe.datasets import load_foursquare_nyc  # noqa: E402


@pytest.fixture(scope="module")
def target(data_home):
    visits = load_foursquare_nyc().visits
    users = visits["user_id"].unique()
    part = lambda a, b: visits[visits["user_id"].isin(users[a:b])]  # noqa: E731
    return Target("nyc", part(0, 12), part(12, 14), part(14, 20), None)


@pytest.mark.parametrize("make", [lambda: HistoryFrequencyBaseline(),
                                  lambda: TrajMoERegressor(d_model=16, n_layers=1, max_epochs=1, random_state=0,
                                                           device="cpu")])
def test_scorer_last_protocol_equals_the_models_own(target, make):
    model = make().fit(target.train)
    rows = Scorer(target, "test").rows(model, "m", 1.0, 0, 0.0)
    assert [r["protocol"] for r in rows] == ["all", "last"]
    for row in rows:
        expected = metrics.ranking_report(model.target_ranks(target.test, protocol=row["protocol"]).to_numpy())
        assert row["n_targets"] == expected["n_targets"] > 0
        assert row["acc@1"] == pytest.approx(expected["acc@1"], abs=1e-5)
        assert row["mrr"] == pytest.approx(expected["mrr"], abs=1e-5)
    assert rows[1]["n_targets"] < rows[0]["n_targets"]


def test_few_shot_sample_takes_whole_users():
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(40), 3), "city": "c", "v": np.arange(120)})
    target = Target("c", frame, frame.iloc[:0], frame.iloc[:0], None)
    few = few_shot_sample(target, 0.05, seed=1)
    assert few["user_id"].nunique() == 2 and len(few) == 6
    assert few_shot_sample(target, 0.001, seed=1)["user_id"].nunique() == 1     # at least one user
    assert few_shot_sample(target, 0.05, seed=1).equals(few)                     # seeded
    # the draw of the benchmarks before FewShotCitySplit drew it (their results stay comparable)
    chosen = np.random.default_rng(1).choice(frame["user_id"].unique(), size=2, replace=False)
    assert set(few["user_id"]) == set(chosen)


def test_tasks_start_slowest_target_first():
    # Gowalla's tasks before YJMob's before NYC's; a target of unknown cost first; every task once
    assert task_list(("nyc", "yjmob_A", "gowalla_bay_area"), (0, 1)) == [
        ("gowalla_bay_area", 0), ("gowalla_bay_area", 1), ("yjmob_A", 0), ("yjmob_A", 1), ("nyc", 0), ("nyc", 1)]
    assert task_list(("nyc", "osaka"), (2,)) == [("osaka", 2), ("nyc", 2)]


def test_paired_margins_by_hand():
    rows = []
    for seed, (ours, theirs) in enumerate([(0.30, 0.25), (0.32, 0.25), (0.28, 0.25)]):
        for model, value, fraction in (("a", ours, 0.05), ("b", theirs, 1.0)):
            rows.append({"target_city": "x", "protocol": "all", "model": model, "fraction": fraction,
                         "seed": seed, "acc@1": value, "mrr": value, "acc@3": 0, "acc@5": 0, "acc@10": 0,
                         "ndcg@10": 0, "fit_seconds": 1.0, "n_targets": 10})
    margins = paired_margins(rows, "a", 0.05, [("b", 1.0)])
    acc = margins[margins.metric == "acc@1"].iloc[0]
    assert acc.mean_diff == pytest.approx(0.05) and acc.std_diff == pytest.approx(0.02)   # diffs .05 .07 .03
    assert bool(acc.holds)
    table = markdown_tables(rows, "T", "settings")
    assert "| a | 0.05 | 0.3000 ± 0.0200 |" in table and "| b | 1 | 0.2500 |" in table


def test_the_literature_protocol_trains_on_each_users_first_visits_and_scores_the_rest():
    from literature_protocol import split_for, split_in_time

    # user 1: 10 visits given out of order; user 2: 5 visits
    visits = pd.DataFrame({"user_id": [1] * 10 + [2] * 5,
                           "day": [9, 0, 8, 1, 7, 2, 6, 3, 5, 4] + [0, 0, 1, 1, 2],
                           "slot": [0] * 10 + [5, 1, 3, 2, 0]})
    train, test = split_in_time(visits, share=0.8)
    assert sorted(train.loc[train.user_id == 1, "day"]) == list(range(8))
    assert sorted(test.loc[test.user_id == 1, "day"]) == [8, 9]
    # user 2 in time: (0, 1), (0, 5), (1, 2), (1, 3) train; (2, 0) is scored
    assert test.loc[test.user_id == 2, ["day", "slot"]].values.tolist() == [[2, 0]]
    assert len(train) + len(test) == len(visits) and train.index.intersection(test.index).empty
    # the validation split: user 1's first 7 visits train, the 8th is scored, the last 2 are not read
    train, valid = split_for(visits, "val")
    assert sorted(train.loc[train.user_id == 1, "day"]) == list(range(7))
    assert valid.loc[valid.user_id == 1, "day"].tolist() == [7]
    assert split_for(visits, "test")[1].index.equals(test.index)


def test_the_literature_protocol_reports_how_each_model_fits_its_training_visits(target):
    import argparse

    from literature_protocol import model_list, score

    from trajmoe import MarkovBaseline

    model = MarkovBaseline().fit(target.train)
    fitted = score(model, target.train)
    expected = metrics.ranking_report(model.target_ranks(target.train, protocol="all").to_numpy())
    assert fitted["acc@1"] == pytest.approx(expected["acc@1"]) and fitted["n_targets"] == expected["n_targets"]
    # a first-order chain has seen every transition of its training visits: it fits them better than new users'
    assert fitted["acc@1"] > score(model, target.test)["acc@1"]
    assert model_list("lstm,markov") == ("lstm", "markov")
    with pytest.raises(argparse.ArgumentTypeError, match="models among"):
        model_list("lstm,gru")


def test_the_literature_protocol_takes_epochs_per_model_and_pairs_every_model_with_markov():
    import argparse

    from literature_protocol import epochs_arg, versus_markov

    assert epochs_arg("30") == {"lstm": 30, "transformer": 30}
    assert epochs_arg("lstm=30,transformer=60") == {"lstm": 30, "transformer": 60}
    assert epochs_arg("transformer=60") == {"lstm": 10, "transformer": 60}
    for bad, message in (("gru=3", "names among lstm, transformer"), ("lstm=0", "int >= 1"), ("0", "int >= 1")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            epochs_arg(bad)
    # hand-checked: LSTM - Markov per seed .030, .013, .025 -> mean .02267, sd .00874 (ddof 1)
    rows = [{"target_city": "nyc", "protocol": "all", "seed": seed, "model": model, "acc@1": value, "mrr": value}
            for seed, (markov, lstm) in enumerate([(0.360, 0.390), (0.387, 0.400), (0.370, 0.395)])
            for model, value in (("markov", markov), ("lstm", lstm), ("history_frequency", markov - 0.08))]
    margins = versus_markov(rows).set_index(["model", "metric"])
    assert margins.loc[("lstm", "acc@1"), "mean_diff"] == pytest.approx(0.0226667, abs=1e-6)
    assert margins.loc[("lstm", "acc@1"), "std_diff"] == pytest.approx(0.0087369, abs=1e-6)
    assert margins.loc[("lstm", "acc@1"), "holds"] and margins.loc[("lstm", "mrr"), "n_seeds"] == 3
    assert margins.loc[("history_frequency", "mrr"), "mean_diff"] == pytest.approx(-0.08)
    assert not margins.loc[("history_frequency", "mrr"), "holds"]
    assert versus_markov([r for r in rows if r["seed"] == 0]).empty        # one seed: no spread to pair


def test_the_literature_protocols_early_stopping_validates_on_the_visits_its_val_split_scores(target):
    from literature_protocol import STOPPING_SHARE, Neural, learning_curve, models, split_for, split_in_time

    from trajmoe import MarkovBaseline
    from trajmoe.estimators._base import Prepared

    # user 1: 10 visits, user 2: 20 visits, one a day; sorted by user and time as the estimators sort them
    visits = pd.DataFrame({"user_id": [1] * 10 + [2] * 20, "day": list(range(10)) + list(range(20)), "slot": 0})
    train = split_in_time(visits)[0]
    prep = Prepared(order=train.index.to_numpy(), location=np.zeros(len(train), np.int64),
                    user_key=train["user_id"].to_numpy(), city_index=np.zeros(len(train), np.int64),
                    times=train[["day", "slot"]])
    held = train[prep.last_visits(STOPPING_SHARE)]
    # of the first 80 % (8 and 16 visits), the last eighth (days 7 and 14, 15): what --split val scores
    assert held.index.equals(split_for(visits, "val")[1].index)
    assert held["day"].tolist() == [7, 14, 15]
    # the neural models validate on those visits, keep their best epoch and report the curve
    epochs = {"lstm": 2, "transformer": 2}
    lstm = models(0, Neural(epochs, early_stopping=True))["lstm"]()
    assert lstm.get_params()["validation_split"] == "time" and lstm.validation_fraction == STOPPING_SHARE
    report = learning_curve(lstm.set_params(min_stays=2).fit(target.train))
    assert report["curve"]["epoch"] == [1, 2] and report["best_epoch"] in (1, 2)
    best = report["curve"]["valid_mrr"][report["best_epoch"] - 1]
    assert best == max(report["curve"]["valid_mrr"]) > 0
    assert report["best_epoch"] == dict(lstm.net_.callbacks_)["early_stopping"].best_epoch_     # the weights kept
    assert learning_curve(MarkovBaseline().fit(target.train)) == {}
    # the epoch kept is early stopping's: an MRR higher by less than its threshold (1e-4 relative) is
    # not a better epoch, and the weights are those of the epoch before
    stub = SimpleNamespace(history_=pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.9], "valid_acc1": 0.1,
                                                  "valid_mrr": [0.300000, 0.300020], "lr": [1e-7, 1e-8]}),
                           net_=SimpleNamespace(callbacks_=[("early_stopping", SimpleNamespace(best_epoch_=1))]))
    assert learning_curve(stub)["best_epoch"] == 1 and learning_curve(stub)["curve"]["lr"] == [1e-7, 1e-8]
    assert models(0, Neural(epochs))["lstm"]().validation_fraction == 0.0
    # --patience reaches the estimators, and without it they keep their own
    assert models(0, Neural(epochs, True, patience=6))["transformer"]().patience == 6
    assert lstm.patience == type(lstm)().patience
    assert models(0, Neural(epochs, True, tie_embeddings=True))["lstm"]().tie_embeddings


def test_the_literature_protocols_plateau_schedule_cuts_the_learning_rate_when_validation_stalls(target):
    from literature_protocol import PLATEAU, Neural, learning_curve, models

    neural = Neural({"lstm": 6, "transformer": 6}, early_stopping=True, patience=6, plateau=True)
    lstm = models(0, neural)["lstm"]().set_params(min_stays=2, device="cpu")      # CPU arithmetic: the curve below
    assert "callbacks__lr_scheduler" not in models(0, Neural(neural.epochs, True))["lstm"]().get_params()
    curve = learning_curve(lstm.fit(target.train))["curve"]
    # ReduceLROnPlateau (mode max, patience 2, factor 0.1, threshold 1e-3 relative), replayed by hand
    # on the recorded validation Acc@1: the learning rate of every epoch follows from the epochs before
    lr, best, stalled, expected = lstm.lr, -float("inf"), 0, []
    for acc in curve["valid_acc1"]:
        expected.append(lr)
        if acc > best * (1 + PLATEAU["threshold"]):
            best, stalled = acc, 0
        else:
            stalled += 1
        if stalled > PLATEAU["patience"]:
            lr, stalled = lr * PLATEAU["factor"], 0
    assert curve["lr"] == pytest.approx(expected)
    assert curve["lr"][-1] == pytest.approx(lstm.lr * PLATEAU["factor"])     # it fell here (epochs 3-5 stalled)


def test_the_literature_protocol_refuses_settings_it_would_not_apply(capsys):
    import literature_protocol
    from literature_protocol import Neural

    epochs = {"lstm": 6, "transformer": 6}
    with pytest.raises(ValueError, match=r"no entry for \['transformer'\]"):
        Neural({"lstm": 6})
    with pytest.raises(ValueError, match="need early stopping"):
        Neural(epochs, plateau=True, patience=6)
    with pytest.raises(ValueError, match="need early stopping"):
        Neural(epochs, patience=6)
    # the schedule cuts after 3 stalled epochs: patience 3 (the estimators' own) stops at that epoch
    with pytest.raises(ValueError, match="after 3 stalled epochs, so a patience of 3"):
        Neural(epochs, True, plateau=True)
    assert Neural(epochs, True, plateau=True, patience=4).plateau
    for argv, message in ((["--patience", "6"], "--patience acts on the validation visits"),
                          (["--early-stopping", "--plateau"], "a patience of 3 (--patience"),
                          (["--epochs", "lstm=2,lstm=3"], "each model at most once")):
        with pytest.raises(SystemExit):
            literature_protocol.main(argv)
        assert message in capsys.readouterr().err


def test_the_literature_protocols_params_override_the_literature_settings_and_refuse_its_own(capsys):
    import literature_protocol
    from literature_protocol import Neural, models, params_arg
    from transfer import LITERATURE

    params = params_arg("lr=1e-3,dropout=0.5,d_model=128,weight_decay=1e-5,coord_encoding=sinusoidal")
    assert params == {"lr": 1e-3, "dropout": 0.5, "d_model": 128, "weight_decay": 1e-5,
                      "coord_encoding": "sinusoidal"}
    assert isinstance(params["d_model"], int)
    neural = Neural({"lstm": 2, "transformer": 2}, True, patience=6, overrides=params)
    for name in ("lstm", "transformer"):
        model = models(3, neural)[name]()
        assert (model.lr, model.dropout, model.d_model, model.weight_decay) == (1e-3, 0.5, 128, 1e-5)
        assert (model.random_state, model.max_epochs, model.patience) == (3, 2, 6)     # the protocol's own kept
    # without it, the literature's settings
    plain = models(0, Neural({"lstm": 2, "transformer": 2}))["transformer"]()
    assert (plain.lr, plain.dropout) == (LITERATURE["lr"], LITERATURE["dropout"])
    for argv, message in ((["--params", "patience=3"], "patience is set by --patience, not --params"),
                          (["--params", "max_epochs=3"], "max_epochs is set by --epochs, not --params"),
                          (["--params", "heads=3"], "heads: parameters among"),
                          (["--params", "lr=1e-3,lr=1e-2"], "each parameter at most once"),
                          (["--params", "dropout=1.5"], "'dropout' parameter of LSTMRegressor must be"),
                          (["--params", "lr"], "name=value pairs")):
        with pytest.raises(SystemExit):
            literature_protocol.main(argv)
        assert message in capsys.readouterr().err


def test_the_literature_protocol_merges_grid_cells_and_counts_visits_per_cell():
    from literature_protocol import cell_density, merge_cells

    # grid-coded visits: (0, 0), (1, 1) and (3, 2) of 500 m; merged 2 x 2 -> (0, 0), (0, 0), (1, 1)
    visits = pd.DataFrame({"user_id": [1, 1, 2, 2, 2], "day": [0, 0, 0, 0, 1], "slot": [1, 2, 1, 2, 1],
                           "x": [0, 1, 3, 0, 3], "y": [0, 1, 2, 0, 2], "city": "grid"})
    merged = merge_cells(visits, 2)
    assert merged[["x", "y"]].values.tolist() == [[0, 0], [0, 0], [1, 1], [0, 0], [1, 1]]
    assert visits["x"].tolist() == [0, 1, 3, 0, 3] and merge_cells(visits, 1) is visits   # the caller's frame kept
    # 500 m: cells (0,0) users {1, 2} 2 visits, (1,1) user 1, (3,2) user 2 2 visits -> 2 of 3 single-user
    assert cell_density(visits) == {"cells": 3, "median_visits": 2.0, "single_user_cells": 0.667,
                                    "single_user_visits": 0.6}
    # merged: (0,0) 3 visits of both users, (1,1) 2 visits of user 2
    assert cell_density(merged) == {"cells": 2, "median_visits": 2.5, "single_user_cells": 0.5,
                                    "single_user_visits": 0.4}
    with pytest.raises(SystemExit, match="grid cells"):
        merge_cells(visits.drop(columns=["x", "y"]).assign(lat=40.7, lon=-74.0), 2)


def test_the_literature_protocols_transition_breakdown_by_hand():
    from literature_protocol import transition_breakdown

    from trajmoe import MarkovBaseline

    # cells A..E = x 0..4 on one row of a grid; three users walk A B C D E: each move counted 3 times
    walk = pd.DataFrame({"day": 0, "slot": range(1, 6), "x": range(5), "y": 0, "city": "grid"})
    train = pd.concat([walk.assign(user_id=u) for u in (1, 2, 3)], ignore_index=True)
    # a new user walks E C A B D (given out of time order): four explore targets, E->C, C->A and B->D
    # never counted, A->B counted 3 times; Markov ranks D after C and B after A (a hit), C after B
    scored = pd.DataFrame({"user_id": 9, "day": 1, "slot": [4, 1, 2, 3, 5], "x": [1, 4, 2, 0, 3], "y": 0,
                           "city": "grid"}, index=[50, 51, 52, 53, 54])
    markov = MarkovBaseline().fit(train)
    before = scored.copy()
    out = transition_breakdown(markov, markov, scored)
    assert {k: v for k, v in out.items() if k != "top1_return"} == {
        "0": {"share": 0.75, "acc@1": 0.0}, "1": {"share": 0.0, "acc@1": None},
        "2-4": {"share": 0.25, "acc@1": 1.0}, "5+": {"share": 0.0, "acc@1": None}}
    # its first choice at B is C, a cell visited before; at E (no move counted) its popularity
    # back-off ranks A, not yet visited, first: one of four
    assert out["top1_return"] == 0.25
    # history frequency only ever ranks a cell of the window first
    frequency = HistoryFrequencyBaseline().fit(train)
    assert transition_breakdown(frequency, markov, scored)["top1_return"] == 1.0
    pd.testing.assert_frame_equal(scored, before)


def test_the_literature_protocol_refuses_merging_a_city_without_a_grid_before_it_trains(capsys, monkeypatch, data_home):
    import literature_protocol

    monkeypatch.setenv("TRAJMOE_DATA", str(data_home))      # the real cities' columns (fails loudly without them)

    monkeypatch.setattr(literature_protocol, "run", lambda *a, **k: pytest.fail("a model trained"))
    with pytest.raises(SystemExit) as exit_info:
        literature_protocol.main(["--targets", "yjmob_A,nyc", "--merge-cells", "4"])
    assert exit_info.value.code == 2
    assert "grid cells (columns x, y), such as yjmob_A; nyc is not" in capsys.readouterr().err


def test_transfer_plot_draws_the_reference_lines_of_the_models_run(tmp_path):
    pytest.importorskip("matplotlib")
    import transfer

    rows = [{"target_city": "nyc", "model": model, "fraction": fraction, "seed": seed, "protocol": "all",
             "acc@1": value + 0.01 * seed}
            for seed in (0, 1)
            for model, fraction, value in (("trajmoe_finetuned", 0.05, 0.2), ("history_gravity", 1.0, 0.25),
                                           ("lstm", 1.0, 0.01))]
    path = tmp_path / "curve.png"
    transfer.plot(rows, path)          # quick mode runs no trajmoe_multi_city: no line for it, no error
    assert path.stat().st_size > 0


def test_ablation_scores_a_scoring_only_variant_with_the_fitted_model_it_departs_from(target, monkeypatch):
    import ablation
    import transfer

    fits = []

    class Counted(TrajMoERegressor):
        def fit(self, X, y=None, pois=None):
            fits.append(self.learned_weight)
            return super().fit(X, y, pois=pois)

    monkeypatch.setattr(ablation, "TrajMoERegressor", Counted)
    monkeypatch.setattr(ablation, "load_target", lambda *args: target)
    monkeypatch.setattr(ablation, "load_sources", lambda *args: (target.train, None))
    monkeypatch.setattr(ablation, "sources_of", lambda name: ())
    settings = transfer.Settings(max_epochs=1, baseline_epochs=None, fractions=(0.05,), seeds=(0,))
    rows = ablation.run_task("nyc", 0, settings, ("trajmoe", "as_trained"), log=lambda *a, **k: None)
    assert fits == [0.5]                                     # one fit serves both variants
    by_name = {r["model"]: r for r in rows if r["protocol"] == "all"}
    # as_trained is the same fitted model scored at learned_weight=1: refit it to check
    model = TrajMoERegressor(random_state=0, max_epochs=1).fit(target.train)
    model.partial_fit(few_shot_sample(target, ablation.FRACTION, 0)).set_params(learned_weight=1.0)
    expected = metrics.ranking_report(model.target_ranks(target.test).to_numpy())
    assert by_name["as_trained"]["mrr"] == pytest.approx(expected["mrr"], abs=1e-5)
    assert by_name["as_trained"]["mrr"] != by_name["trajmoe"]["mrr"]


def test_transfer_fits_the_few_shot_rules_on_the_fine_tuning_users_alone(target, monkeypatch):
    import transfer

    monkeypatch.setattr(transfer, "load_target", lambda *args: target)
    monkeypatch.setattr(transfer, "load_sources", lambda *args: (target.train, None))
    settings = transfer.Settings(max_epochs=1, baseline_epochs=None, fractions=(0.25,), seeds=(0,))
    rows = transfer.run_task("nyc", 0, (), settings, models=("history_moves", "history_moves_few_shot"),
                             log=lambda *a, **k: None)
    by_name = {r["model"]: r for r in rows if r["protocol"] == "all"}
    few = few_shot_sample(target, 0.25, 0)
    assert by_name["history_moves_few_shot"]["fraction"] == 0.25
    assert by_name["history_moves_few_shot"]["n_users"] == few.user_id.nunique() == 3
    # the rule's order beyond the window (popularity, which also breaks its ties) is counted on the sample
    rule = transfer.FEW_SHOT["history_moves_few_shot"]().fit(few)
    expected = metrics.ranking_report(rule.target_ranks(target.test).to_numpy())
    assert by_name["history_moves_few_shot"]["mrr"] == pytest.approx(expected["mrr"], abs=1e-5)
    assert by_name["history_moves_few_shot"]["mrr"] != by_name["history_moves"]["mrr"]


class _Started(Exception):
    """Raised where a benchmark script, its arguments parsed, would start its tasks."""


@pytest.fixture
def started(monkeypatch):
    """The Settings each benchmark run of the test starts with: ``transfer.run`` and
    ``ablation.run_task`` record them and raise :class:`_Started` instead of running."""
    import ablation
    import transfer

    seen = []

    def stop(*args, **kwargs):
        seen.append(next(a for a in args if isinstance(a, transfer.Settings)))
        raise _Started

    monkeypatch.setattr(transfer, "run", stop)
    monkeypatch.setattr(ablation, "run_task", stop)
    monkeypatch.setattr(transfer, "quiet_data_notes", lambda: None)
    return seen


def test_transfer_takes_source_caps_over_the_modes_own(started):
    import argparse

    import transfer
    from _harness import source_caps

    assert source_caps("singapore=all, gowalla_los_angeles = 400") == {"singapore": None, "gowalla_los_angeles": 400}
    for bad, message in (("paris=3", "'paris': unknown city"), ("singapore", "expected CITY=N or CITY=all"),
                         ("=3", "expected CITY=N or CITY=all"), ("singapore=5,", "'': expected"),
                         ("singapore=5,singapore=all", "given twice"), ("singapore=0", "int >= 1, or 'all'"),
                         ("singapore=2.5", "int >= 1"), ("singapore=+5", "int >= 1"), ("singapore=\u00b2", "int >= 1")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            source_caps(bad)

    with pytest.raises(_Started):
        transfer.main(["--quick", "--source-users", "singapore=all,gowalla_los_angeles=400,toronto=20"])
    # 'all' lifts the mode's cap, a number replaces or adds one; the other caps stay
    assert started[0].source_users == {"nyc": 150, "yjmob_A": 50, "gowalla_los_angeles": 400, "toronto": 20}
    assert transfer.QUICK.source_users["singapore"] == 300
    with pytest.raises(_Started):
        transfer.main(["--quick"])
    assert started[1].source_users == transfer.QUICK.source_users
    with pytest.raises(SystemExit):          # NYC's only source is Singapore: a cap on NYC would do nothing
        transfer.main(["--quick", "--targets", "nyc", "--source-users", "nyc=5"])
    assert len(started) == 2


def test_target_pois_from_training_keep_only_the_training_users_venues(data_home):
    from _harness import load_target, training_venues

    pois = pd.DataFrame({"venue_id": [1, 2, 3], "lat": [40.70, 40.71, 40.72], "lon": [-74.0, -74.0, -74.0]})
    train = pd.DataFrame({"user_id": [7, 7, 8], "venue_id": [1, 3, 3]})
    assert training_venues(pois, train)["venue_id"].tolist() == [1, 3]
    grid = pois.drop(columns="venue_id")                    # POI counts per cell: no user made them
    assert training_venues(grid, train) is grid and training_venues(None, train) is None

    full = load_target("nyc", train_users=20, eval_users=5, split_seed=0)
    cut = load_target("nyc", train_users=20, eval_users=5, split_seed=0, pois_from="training")
    assert cut.train.equals(full.train) and cut.test.equals(full.test)
    # the venues of all the training users (70 %), not only of the 20 kept: 4,439 of NYC's 4,988 at seed 0
    assert (len(full.pois), len(cut.pois)) == (4988, 4439)
    assert cut.pois["venue_id"].isin(full.pois["venue_id"]).all()
    only_evaluated = set(full.pois["venue_id"]) - set(cut.pois["venue_id"])
    assert only_evaluated and only_evaluated.isdisjoint(set(full.train["venue_id"]))
    with pytest.raises(ValueError, match="pois_from must be one of"):
        load_target("nyc", pois_from="test")


def test_transfer_and_ablation_pass_the_target_pois_choice_to_their_tasks(started):
    import ablation
    import transfer

    with pytest.raises(_Started):
        transfer.main(["--quick", "--target-pois", "training"])
    assert started[0].target_pois == "training" and "training users' venues" in started[0].describe()
    assert transfer.QUICK.target_pois == "all" and "venues" not in transfer.QUICK.describe()
    with pytest.raises(SystemExit):
        transfer.main(["--quick", "--target-pois", "test"])
    with pytest.raises(_Started):            # one process: the task runs here, where it is patched
        ablation.main(["--quick", "--jobs", "1", "--target-pois", "training"])
    assert started[1].target_pois == "training"
