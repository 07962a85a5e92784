"""The literature's protocol for the neural baselines: the same users in training and in scoring.

``transfer.py`` splits a target city by USERS: a model is scored on people it never saw, as a
foundation model meets a new city. The paper's and LibCity's baselines are instead trained on the
earlier visits of every user and scored on the later visits of the same users. This script runs
that protocol for the literature LSTM and Transformer (per-city location IDs, the settings of
``transfer.LITERATURE``) and for Markov and history frequency, to tell a broken baseline from a
protocol that ID embeddings cannot serve:

* the target's training users (the 70 % of ``transfer.py``'s split with the seed; ``--quick``:
  capped as in ``transfer.py --quick``);
* each user's first 80 % of visits in time train every model, the last 20 % are scored (windows of
  those visits only, protocol ``all``, full ranking, ties pessimistic); ``--split val`` (to choose
  settings such as ``--epochs``): the first 70 % train and the next 10 % are scored, the last 20 %
  are not read;
* the neural baselines train ``--epochs`` epochs (no held-out users: all users are in training);
  ``--epochs lstm=30,transformer=60`` gives each its own (the numbers chosen on NYC's ``--split
  val``, docs: results page);
* ``train acc@1``: Acc@1 of each model on the visits it trained on (same windows and ranking), to
  tell a model that has not fitted its training data (below Markov's there) from one that fits it
  and does not generalise;
* ``--early-stopping`` (LibCity's protocol, 7:1:2 in time per user): the LSTM and Transformer train on
  each user's first 70 % of visits and stop early on the next 10 % (``validation_split="time"``,
  the validation MRR with ``--patience`` epochs of patience, default the estimators', at most
  ``--epochs`` epochs, the best epoch's weights); Markov and history frequency still count the
  first 80 %. Each neural row then holds its learning curve (``curve``: training loss, validation
  Acc@1 and MRR per epoch) and the epoch kept;
* ``--plateau`` (with ``--early-stopping`` and a ``--patience`` above 3): the learning rate falls
  tenfold when the validation Acc@1 has not risen by 0.1 % for 3 epochs in a row
  (``ReduceLROnPlateau`` with patience 2, the schedule of LibCity's ``TrajLocPredExecutor`` and of
  DeepMove's code: ``lr_step`` 2, ``lr_decay`` 0.1, ``schedule_threshold`` 1e-3) instead of the
  estimators' steps at 40, 60 and 90 % of the epochs;
* ``--tie-embeddings``: the LSTM and Transformer score cells by their input ID embeddings (weight
  tying, ``tie_embeddings=True``; not in the literature's baselines, a diagnostic of how they
  rank the cells of the window);
* ``--params lr=1e-3,dropout=0.5,d_model=128``: estimator parameters of the LSTM and Transformer
  over the settings of ``transfer.LITERATURE`` (for instance LibCity's own: learning rate 1e-3,
  dropout 0.5, L2 1e-5, a hidden size of 128); the parameters the protocol sets itself (seed,
  epochs, validation, patience, callbacks, weight tying) are refused there;
* ``--transitions`` (a diagnostic): each row also holds ``explore_by_transition``, the model's
  Acc@1 on the explore targets by how often their move (current cell -> target) occurs in the
  training visits (counted by a Markov chain fitted on them: 0, 1, 2-4, 5 and more), and the share
  of explore targets whose first-ranked cell is one the user visited before, to tell a model that
  has not learned the moves a chain of counts knows from one that prefers returns;
* ``--merge-cells K`` (a diagnostic, for cities given as grid cells, YJMob100K): every K x K block
  of 500 m cells becomes one cell, the same users and visits on a coarser grid (no POI frame: the
  models of this script do not read it), to see how the baselines fare as cells get more visits
  each.

Usage::

    TRAJMOE_DATA=/path/to/shared/data python benchmarks/literature_protocol.py --targets nyc --seeds 0

Prints one row per (target, seed, model): Acc@1, MRR, Acc@1 on return / explore targets and Acc@1
on the training visits, then the means over seeds and, with several seeds, each model's paired
difference from Markov (the same users and visits within a seed): mean and standard deviation over
seeds. ``--models lstm,markov`` runs only those.
"""

from __future__ import annotations

import argparse
import ast
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from skorch.callbacks import LRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (city_list, comma_list, environment, frame_markdown, load_target,  # noqa: E402
                      paired_margins, positive_int, quiet_data_notes, seed_list, timed, write_json)
from transfer import LITERATURE, QUICK  # noqa: E402

from trajmoe import (HistoryFrequencyBaseline, LSTMRegressor, MarkovBaseline, SpatialSemanticEncoder,  # noqa: E402
                     TransformerRegressor, metrics)
from trajmoe.cli import load_city  # noqa: E402
from trajmoe.encoder import cell_keys  # noqa: E402
from trajmoe.exceptions import SharedUsersWarning  # noqa: E402

#: Share of each user's visits (in time) that trains; the rest is scored.
TRAIN_SHARE = 0.8
#: Share of each user's visits that trains under ``--split val``; up to TRAIN_SHARE is scored.
VALID_TRAIN_SHARE = 0.7


def split_in_time(visits, share=TRAIN_SHARE):
    """Each user's first ``share`` of visits (by start time, else by day and slot) and the rest."""
    order = ["started_at"] if "started_at" in visits else ["day", "slot"]
    ranked = visits.sort_values(order, kind="stable")
    position = ranked.groupby("user_id").cumcount() / ranked.groupby("user_id")["user_id"].transform("size")
    early = position.reindex(visits.index) < share
    return visits[early], visits[~early]


#: The neural baselines (trained ``--epochs`` epochs) and all the models of a run, in their order.
NEURAL = ("lstm", "transformer")
#: Epochs of a neural baseline that ``--epochs`` does not name.
DEFAULT_EPOCHS = 10
MODELS = ("markov", "history_frequency") + NEURAL
#: The columns of a row taken from the ranking report of the scored visits.
REPORTED = ("acc@1", "mrr", "acc@1_return", "acc@1_explore")


def split_for(visits, split):
    """(train, scored) visits of the ``"test"`` or ``"val"`` split (see the module's docstring)."""
    train, scored = split_in_time(visits)
    if split == "val":
        train, scored = split_in_time(train, VALID_TRAIN_SHARE / TRAIN_SHARE)
    return train, scored


def model_list(text):
    """argparse type: comma-separated names of :data:`MODELS`."""
    return comma_list(text, str, f"models among {', '.join(MODELS)}", lambda v: v in MODELS)


def epochs_arg(text):
    """argparse type: epochs of every neural baseline (``"30"``) or of each (``"lstm=30,transformer=60"``,
    the others :data:`DEFAULT_EPOCHS`), as a dict over :data:`NEURAL`."""
    if "=" not in text:
        return dict.fromkeys(NEURAL, positive_int(text))
    what = f"name=epochs pairs, names among {', '.join(NEURAL)}"
    pairs = comma_list(text, lambda v: tuple(v.split("=", 1)), what, lambda v: len(v) == 2 and v[0] in NEURAL)
    names = [name for name, _ in pairs]
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"each model at most once, got {text!r}")
    return {**dict.fromkeys(NEURAL, DEFAULT_EPOCHS), **{name: positive_int(value) for name, value in pairs}}


#: Estimator parameters that the protocol sets itself (:meth:`Neural.params`), not ``--params``: name -> the option
#: that sets it (None: fixed by the protocol).
PROTOCOL_PARAMS = {"random_state": "--seeds", "max_epochs": "--epochs", "tie_embeddings": "--tie-embeddings",
                   "validation_fraction": "--early-stopping", "validation_split": "--early-stopping",
                   "patience": "--patience", "callbacks": "--plateau", "encoder": None}


def tunable_params():
    """Names ``--params`` accepts: the parameters the LSTM and Transformer share, less
    :data:`PROTOCOL_PARAMS`."""
    shared = set(LSTMRegressor().get_params(deep=False)) & set(TransformerRegressor().get_params(deep=False))
    return sorted(shared - set(PROTOCOL_PARAMS))


def params_arg(text):
    """argparse type: ``name=value`` pairs (``"lr=1e-3,dropout=0.5"``), each value a Python literal
    (``1e-3``, ``128``, ``True``) or else a string, as a dict; names among :func:`tunable_params`."""
    pairs = comma_list(text, lambda v: tuple(v.split("=", 1)), "name=value pairs", lambda v: len(v) == 2)
    names = [name for name, _ in pairs]
    unknown = sorted(set(names) - set(tunable_params()))
    if unknown:
        own = [f"{name} is set by {PROTOCOL_PARAMS[name] or 'the protocol'}" for name in unknown
               if name in PROTOCOL_PARAMS]
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown)}: " + (f"{'; '.join(own)}, not --params; " if own else "")
            + f"parameters among {', '.join(tunable_params())}")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"each parameter at most once, got {text!r}")

    def literal(value):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    params = {name: literal(value) for name, value in pairs}
    for cls in (LSTMRegressor, TransformerRegressor):       # a bad value fails here, not after loading data
        try:
            cls(**params)._check_params()
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return params


#: ``--early-stopping``: the share of the training visits (the first TRAIN_SHARE) that validates.
STOPPING_SHARE = (TRAIN_SHARE - VALID_TRAIN_SHARE) / TRAIN_SHARE        # 0.125 (last_visits allows for rounding)


#: ``--plateau``: LibCity's schedule (``TrajLocPredExecutor``: ReduceLROnPlateau on the validation
#: accuracy, ``lr_step`` 2, ``lr_decay`` 0.1, ``schedule_threshold`` 1e-3), as skorch arguments.
PLATEAU = dict(policy=ReduceLROnPlateau, monitor="valid_acc1", mode="max", patience=2, factor=0.1, threshold=1e-3)
#: :data:`PLATEAU` as written to the JSON results.
PLATEAU_RECORD = {**PLATEAU, "policy": "ReduceLROnPlateau"}


@dataclass
class Neural:
    """How the neural baselines train (see the module's docstring).

    ``epochs``: dict over :data:`NEURAL`; ``early_stopping``: they validate on each user's last
    :data:`STOPPING_SHARE` of their training visits (in time) and keep their best epoch after
    ``patience`` epochs without a better validation MRR (None: the estimators' default);
    ``plateau``: with early stopping, the learning rate follows :data:`PLATEAU`;
    ``tie_embeddings``: the estimators' own; ``overrides``: estimator parameters over
    ``transfer.LITERATURE`` (``--params``).
    """

    epochs: dict
    early_stopping: bool = False
    tie_embeddings: bool = False
    patience: int | None = None
    plateau: bool = False
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = sorted(set(NEURAL) - set(self.epochs))
        if missing:
            raise ValueError(f"epochs has no entry for {missing}: give one per model of {list(NEURAL)}")
        if (self.plateau or self.patience is not None) and not self.early_stopping:
            raise ValueError("the plateau schedule and the patience act on the validation visits: they need early "
                             "stopping (--early-stopping)")
        stalled = PLATEAU["patience"] + 1
        patience = LSTMRegressor().patience if self.patience is None else self.patience
        if self.plateau and patience <= stalled:
            raise ValueError(f"the plateau schedule cuts the learning rate after {stalled} stalled epochs, so a "
                             f"patience of {patience} (--patience; the estimators' own without it) can stop "
                             "training before any epoch runs at the cut rate: give a larger one (the results page "
                             "used 6)")

    @property
    def settings(self):
        """The LSTM's and Transformer's settings beside the protocol's: ``transfer.LITERATURE`` with
        ``overrides`` over it (dict)."""
        return {**LITERATURE, **self.overrides}

    def params(self, name, seed):
        """Estimator parameters of one neural baseline.

        Parameters
        ----------
        name : {"lstm", "transformer"}
        seed : int
            Its ``random_state``.

        Returns
        -------
        dict
            Keyword arguments of :class:`trajmoe.LSTMRegressor` or :class:`trajmoe.TransformerRegressor`.
        """
        held = dict(validation_fraction=STOPPING_SHARE, validation_split="time") if self.early_stopping else \
            dict(validation_fraction=0.0)
        if self.early_stopping and self.patience is not None:
            held["patience"] = self.patience
        if self.early_stopping and self.plateau:
            held["callbacks__lr_scheduler"] = LRScheduler(**PLATEAU)
        return dict(random_state=seed, max_epochs=self.epochs[name], tie_embeddings=self.tie_embeddings, **held,
                    **self.settings)


def models(seed, neural):
    """Factories of every model of :data:`MODELS`; ``neural``: a :class:`Neural`."""
    return {"markov": lambda: MarkovBaseline(), "history_frequency": lambda: HistoryFrequencyBaseline(),
            "lstm": lambda: LSTMRegressor(**neural.params("lstm", seed)),
            "transformer": lambda: TransformerRegressor(**neural.params("transformer", seed))}


def merge_cells(visits, factor):
    """Grid-coded visits (columns ``x``, ``y``: 500 m cells) on a grid ``factor`` times coarser.

    Raises
    ------
    SystemExit
        If the visits are not grid-coded (latitude / longitude cities have no ``x`` column).
    """
    if factor == 1:
        return visits
    if not {"x", "y"} <= set(visits):
        raise SystemExit("--merge-cells needs a city given as grid cells (columns x, y), such as yjmob_A")
    return visits.assign(x=visits["x"] // factor, y=visits["y"] // factor)


def cell_density(visits, pois=None):
    """How many visits each cell of the training visits gets, and from how many users.

    Returns
    -------
    dict
        ``cells`` (cells with a training visit), ``median_visits`` (per such cell),
        ``single_user_cells`` (share of them visited by one user), ``single_user_visits`` (share of
        the visits that fall in those cells).
    """
    cell = SpatialSemanticEncoder().fit(visits, pois=pois).locate(visits)["label"]
    per_cell = visits.groupby(cell.to_numpy())["user_id"].agg(["size", "nunique"])
    single = per_cell["nunique"] == 1
    return {"cells": len(per_cell), "median_visits": float(per_cell["size"].median()),
            "single_user_cells": round(float(single.mean()), 3),
            "single_user_visits": round(float(per_cell.loc[single, "size"].sum() / len(visits)), 3)}


def score(model, visits):
    """Ranking report of ``model`` on every target of ``visits`` (protocol ``all``)."""
    table = model.target_table(visits, protocol="all")
    return metrics.ranking_report(table["rank"].to_numpy(), kind=table["kind"].to_numpy(), oov=table["oov"].to_numpy())


#: Bins of a transition's training count (``--transitions``): 0, 1, 2-4, 5 and more.
TRANSITION_BINS = ((0, 0), (1, 1), (2, 4), (5, None))


def transition_breakdown(model, markov, visits):
    """How ``model`` fares on the explore targets of ``visits``, by how often the transition from
    the current cell to the target was seen in training (``--transitions``).

    The count is the fitted ``markov``'s (:class:`trajmoe.MarkovBaseline`: consecutive visits of one
    user in the training visits), so a bin says how much a chain of counts knows of that move.

    Parameters
    ----------
    model : fitted estimator
        The model scored (``markov`` itself included).
    markov : MarkovBaseline
        Fitted on the same training visits.
    visits : DataFrame
        The scored visits (protocol ``all``).

    Returns
    -------
    dict
        Per bin of :data:`TRANSITION_BINS` (``"0"``, ``"1"``, ``"2-4"``, ``"5+"``): ``share`` of the
        explore targets and the model's ``acc@1`` on them; ``top1_return`` (over all explore
        targets): the share whose first-ranked cell is one the user visited earlier among the scored
        visits (at or before the current one; the evaluation window, of at most the model's window
        length, can start later, so this is an upper bound of the share ranked as returns).
    """
    table = model.target_table(visits, protocol="all")
    order = ["started_at"] if "started_at" in visits else ["day", "slot"]
    ranked = visits.sort_values(order, kind="stable").sort_values("user_id", kind="stable")
    located = markov.encoder_.locate(ranked).set_axis(ranked.index)
    key = cell_keys(located["ix"].to_numpy(), located["iy"].to_numpy())      # int64 beyond float precision
    # the key of each visit and of the user's next one (-1 after the last)
    last = np.r_[ranked["user_id"].to_numpy()[1:] != ranked["user_id"].to_numpy()[:-1], True]
    location = pd.Series(key, index=ranked.index)
    following = pd.Series(np.where(last, -1, np.r_[key[1:], -1]), index=ranked.index)
    explore = table.index[table["kind"].to_numpy() == "explore"]
    pairs = pd.MultiIndex.from_arrays([location.loc[explore].to_numpy(), following.loc[explore].to_numpy()])
    seen = markov.transitions_.xs(visits["city"].iloc[0], level=0).reindex(pairs, fill_value=0).to_numpy()
    hit = table.loc[explore, "rank"].to_numpy() == 1
    out = {}
    for low, high in TRANSITION_BINS:
        inside = (seen >= low) if high is None else (seen >= low) & (seen <= high)
        name = f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"
        out[name] = {"share": round(float(inside.mean()), 4) if len(seen) else 0.0,
                     "acc@1": round(float(hit[inside].mean()), 4) if inside.any() else None}
    first = pd.Series(model.predict(ranked), index=ranked.index)
    explore, guessed = set(explore), 0
    for _, rows in located["label"].groupby(ranked["user_id"], sort=False):
        earlier = set()
        for row, label in rows.items():
            earlier.add(label)
            guessed += row in explore and first[row] in earlier
    out["top1_return"] = round(guessed / max(len(explore), 1), 4)
    return out


def learning_curve(model):
    """Training loss, validation Acc@1 and MRR and the learning rate of each epoch, and the epoch kept.

    Parameters
    ----------
    model : fitted estimator
        With ``history_`` (the neural estimators); a counting baseline has none.

    Returns
    -------
    dict
        Empty without validation scores; else ``best_epoch`` (int: early stopping's best epoch,
        the weights the model holds, whose threshold can pass over an epoch with a marginally
        higher MRR; without early stopping the epoch of the best validation MRR) and ``curve``
        (dict of lists: ``epoch``, ``train_loss``, ``valid_acc1``, ``valid_mrr`` rounded to 6
        decimals, ``lr`` unrounded, NaN where no scheduler recorded it).
    """
    history = getattr(model, "history_", None)
    if history is None or history["valid_mrr"].isna().all():
        return {}
    # the learning rate unrounded: after a few tenfold cuts it is below what rounding keeps
    curve = history[["epoch", "train_loss", "valid_acc1", "valid_mrr"]].round(6).assign(lr=history["lr"])
    stopper = dict(model.net_.callbacks_).get("early_stopping")
    best = getattr(stopper, "best_epoch_", None)
    best = int(curve.loc[curve["valid_mrr"].idxmax(), "epoch"]) if best is None else int(best)
    return {"best_epoch": best, "curve": curve.to_dict("list")}


def run(targets, seeds, neural, quick, names=None, split="test", merge=1, transitions=False):
    rows = []
    for target in targets:
        for seed in seeds:
            t = load_target(target, None, QUICK.train_users.get(target) if quick else None, None, seed)
            train, test = split_for(merge_cells(t.train, merge), split)
            pois = t.pois if merge == 1 else None
            print(f"{target} seed {seed}, cells of the training visits:",
                  " ".join(f"{k} {v}" for k, v in cell_density(train, pois).items()), flush=True)
            # --transitions: every model's explore targets by the count of their transition
            markov = MarkovBaseline().fit(train) if transitions else None
            for name, make in models(seed, neural).items():
                if names and name not in names:
                    continue
                model, seconds = timed(lambda: make().fit(train, pois=pois))
                report = score(model, test)
                row = {"target_city": target, "split": split, "seed": seed, "model": name, "protocol": "all",
                       "users": t.train.user_id.nunique(), **{k: round(report[k], 4) for k in REPORTED},
                       "n_targets": report["n_targets"], "merge_cells": merge,
                       "train_acc@1": round(score(model, train)["acc@1"], 4),
                       "epochs": neural.epochs.get(name),
                       "tie_embeddings": neural.tie_embeddings if name in NEURAL else None,
                       "plateau": neural.plateau if name in NEURAL else None,
                       "params": neural.settings if name in NEURAL else None,
                       "fit_seconds": round(seconds, 1), **learning_curve(model)}
                if transitions:
                    row["explore_by_transition"] = transition_breakdown(model, markov, test)
                rows.append(row)
                print(" ".join(f"{k} {v}" for k, v in row.items() if k != "curve"), flush=True)
                if "curve" in row:
                    print(pd.DataFrame(row["curve"]).to_string(index=False), flush=True)
    return rows


def versus_markov(rows):
    """Paired differences (model - Markov, within a seed) of Acc@1 and MRR over seeds, for every
    other model run with at least two seeds (:func:`_harness.paired_margins`); empty otherwise."""
    frame = pd.DataFrame(rows)
    if frame.empty or frame["seed"].nunique() < 2 or "markov" not in set(frame["model"]):
        return pd.DataFrame()
    names = [name for name in frame["model"].unique() if name != "markov"]
    return pd.concat([paired_margins(rows, name, None, [("markov", None)]).assign(model=name) for name in names],
                     ignore_index=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--targets", type=city_list, default="nyc,yjmob_A", help="comma-separated cities")
    parser.add_argument("--seeds", type=seed_list, default="0", help="comma-separated seeds")
    parser.add_argument("--epochs", type=epochs_arg, default=str(DEFAULT_EPOCHS),
                        help="epochs of the LSTM and Transformer: one number, or lstm=N,transformer=M")
    parser.add_argument("--models", type=model_list, default=None,
                        help=f"comma-separated, among {', '.join(MODELS)} (%(default)s: all)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="score each user's last 20 %% of visits, or the 10 %% before them (to choose settings)")
    parser.add_argument("--merge-cells", type=positive_int, default=1,
                        help="a grid-coded city's K x K cells as one (a diagnostic: cells of K x 500 m)")
    parser.add_argument("--early-stopping", action="store_true",
                        help="the LSTM and Transformer train on each user's first 70 %% of visits and stop early "
                             "on the next 10 %% (at most --epochs epochs)")
    parser.add_argument("--patience", type=positive_int, default=None,
                        help="--early-stopping: epochs without a better validation MRR before training stops "
                             "(%(default)s: the estimators' own)")
    parser.add_argument("--plateau", action="store_true",
                        help="--early-stopping: the learning rate falls tenfold when the validation Acc@1 stalls "
                             "for 3 epochs in a row (LibCity's ReduceLROnPlateau, patience 2) instead of the "
                             "estimators' fixed steps; needs a --patience above 3, so that an epoch runs at the cut "
                             "rate")
    parser.add_argument("--tie-embeddings", action="store_true",
                        help="the LSTM and Transformer score cells by their input ID embeddings (weight tying)")
    parser.add_argument("--params", type=params_arg, default=None,
                        help="estimator parameters of the LSTM and Transformer over the literature's settings, "
                             "name=value pairs such as lr=1e-3,dropout=0.5,d_model=128 (default: none)")
    parser.add_argument("--transitions", action="store_true",
                        help="each model's Acc@1 on the explore targets by the training count of their transition "
                             "(0, 1, 2-4, 5+) and the share of them whose first-ranked cell is an earlier one")
    parser.add_argument("--quick", action="store_true", help="training users capped as in transfer.py --quick")
    parser.add_argument("--output", default=None, help="JSON results file")
    args = parser.parse_args(argv)
    if args.early_stopping and args.split == "val":
        parser.error("--early-stopping chooses the epoch on validation visits itself: use it with --split test")
    if (args.plateau or args.patience is not None) and not args.early_stopping:
        parser.error(f"{'--plateau' if args.plateau else '--patience'} acts on the validation visits: "
                     "use it with --early-stopping")
    if args.merge_cells > 1:                    # before any model trains, not at the city that has no grid
        flat = [city for city in args.targets if not {"x", "y"} <= set(load_city(city)[0])]
        if flat:
            parser.error(f"--merge-cells needs cities given as grid cells (columns x, y), such as yjmob_A; "
                         f"{', '.join(flat)} {'is' if len(flat) == 1 else 'are'} not")
    quiet_data_notes()
    # scoring the users a model trained on is this protocol, not the mistake the warning is about
    warnings.filterwarnings("ignore", category=SharedUsersWarning)
    try:
        neural = Neural(args.epochs, args.early_stopping, args.tie_embeddings, args.patience, args.plateau,
                        args.params or {})
    except ValueError as exc:
        parser.error(str(exc))
    rows = run(args.targets, args.seeds, neural, args.quick, args.models, args.split, args.merge_cells,
               args.transitions)
    frame = pd.DataFrame(rows)
    means = frame.groupby(["target_city", "model"], sort=False)[[*REPORTED, "train_acc@1"]].mean()
    print(means.round(3).to_string())
    margins = versus_markov(rows)
    if len(margins):
        print("paired difference from Markov (mean and sd over seeds):")
        print(frame_markdown(margins))
    if args.output:
        write_json(args.output, {"benchmark": "literature_protocol", "split": args.split,
                                 "train_share": TRAIN_SHARE if args.split == "test" else VALID_TRAIN_SHARE,
                                 "epochs": args.epochs, "early_stopping": args.early_stopping,
                                 "tie_embeddings": args.tie_embeddings, "patience": args.patience,
                                 "plateau": PLATEAU_RECORD if args.plateau else None,
                                 "params": neural.settings,
                                 "quick": args.quick,
                                 "merge_cells": args.merge_cells, "environment": environment(), "results": rows,
                                 "versus_markov": margins.round(4).to_dict("records")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
