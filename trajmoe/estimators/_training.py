"""Training that survives faults: the skorch callbacks behind a neural estimator's fit.

- :class:`FiniteLoss` stops training at the first NaN or infinite batch loss with
  :class:`trajmoe.exceptions.NonFiniteLossError`, naming the epoch and the batch (the estimator's
  atomic ``fit``/``partial_fit`` then leaves the model as it was before the call);
- :class:`ValidRanking` records the validation users' Acc@1 and MRR every epoch
  (``valid_acc1``, ``valid_mrr``), so that early stopping can monitor a ranking metric;
- :class:`EpochSeed` seeds torch at the start of every epoch from ``random_state`` and the
  epoch's number, so that an epoch's random draws (dropout) do not depend on how the run got
  there;
- :class:`ResumableLRScheduler` and :class:`ResumableEarlyStopping` are skorch's
  :class:`~skorch.callbacks.LRScheduler` and :class:`~skorch.callbacks.EarlyStopping` that pick up
  where a history loaded from a checkpoint left off (the schedule's step, the patience used up,
  the best epoch and its weights);
- :func:`claim_checkpoint_dir` refuses to resume a checkpoint of another run (other data or
  parameters).

Together with skorch's :class:`~skorch.callbacks.Checkpoint` (written after every epoch,
:func:`trajmoe.nn.parallel.resume_from_checkpoint`) and the batch order of the next epoch
(``iterator_train__skip_epochs``), a fit killed at any point and started again with the same
``checkpoint_dir`` ends with the weights of an uninterrupted one (exactly, on CPU with an int
``random_state``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import warnings
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, PrintLog
from torch.optim.lr_scheduler import ReduceLROnPlateau

from .. import metrics
from ..exceptions import NonFiniteLossError
from ..nn.loss import location_targets, ranking_scores
from ..nn.parallel import DistributedNeuralNet, is_main_process, rank_and_world
from ._scoring import SCORE_BLOCK

__all__ = ["FiniteLoss", "ValidRanking", "EpochSeed", "ResumableLRScheduler", "ResumableEarlyStopping",
           "claim_checkpoint_dir", "BEST_FILE", "RUN_FILE", "TrainingNet", "DistributedTrainingNet"]

#: File of the best weights so far, in a checkpoint directory (with ``load_best`` early stopping).
BEST_FILE = "best_params.pt"
#: File naming the run a checkpoint directory belongs to.
RUN_FILE = "run.json"


class FiniteLoss(Callback):
    """Raise :class:`~trajmoe.exceptions.NonFiniteLossError` at the first NaN or infinite loss.

    Checked after every training and validation batch; the message names the epoch (counted
    over the net's history, as ``history_``), the batch within it and the loss.
    """

    def on_epoch_begin(self, net, **kwargs):
        self.batches_ = {True: 0, False: 0}

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        counts = getattr(self, "batches_", None)
        if counts is None:
            counts = self.batches_ = {True: 0, False: 0}
        counts[bool(training)] += 1
        loss = kwargs.get("loss")
        if loss is None:
            return
        value = float(loss.detach().float().cpu()) if torch.is_tensor(loss) else float(loss)
        if math.isfinite(value):
            return
        kind = "training" if training else "validation"
        raise NonFiniteLossError(
            f"The {kind} loss is {value} at epoch {len(net.history)}, {kind} batch {counts[bool(training)]}: "
            "training diverged and was stopped. The estimator is left as it was before this call. Lower the "
            "learning rate (lr, or finetune_lr for partial_fit), keep clip_grad set, or look for extreme "
            "values in the input.")


class ValidRanking(Callback):
    """Record Acc@1 and MRR of the validation targets after every epoch.

    Ranks every validation target against all of its city's cells with the scores of the
    validation pass (no second forward), ties counted pessimistically
    (:func:`trajmoe.metrics.target_ranks`), and records ``valid_acc1`` and ``valid_mrr`` in the
    net's history; in a process group the counts of all ranks are summed first, so every rank
    records the same values. The validation loss of a model with per-city location IDs is
    dominated by the held-out users' own cells, which no training user visited, and rises from the
    first epoch while its ranking still improves: monitor ``valid_mrr`` there.

    Parameters
    ----------
    block : int, default :data:`~trajmoe.estimators._scoring.SCORE_BLOCK`
        Scores held at once (tokens x cells): the memory of the ranking, whatever the number of cells.
    """

    def __init__(self, block=SCORE_BLOCK):
        self.block = block

    def on_epoch_begin(self, net, **kwargs):
        self.sums_ = torch.zeros(3, dtype=torch.float64)      # hits at 1, reciprocal ranks, targets

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        y_true = {k: torch.as_tensor(v, device=y_pred["query"].device) for k, v in batch[1].items()}
        rows, cols, targets = location_targets(y_pred, y_true)
        step = max(1, self.block // max(y_pred["candidates"].shape[0], 1))
        with torch.no_grad():
            for start in range(0, len(rows), step):
                part = slice(start, start + step)
                scores = ranking_scores(y_pred, rows[part], cols[part]).float()   # the order of target_ranks
                ranks = torch.as_tensor(metrics.target_ranks(scores, targets[part]), dtype=torch.float64)
                self.sums_ += torch.stack([(ranks == 1).sum(), (1.0 / ranks).sum(), ranks.new_tensor(len(ranks))])

    def on_epoch_end(self, net, **kwargs):
        sums = getattr(self, "sums_", None)
        if sums is None:
            return
        _, world = rank_and_world()
        if world > 1:
            sums = sums.to(net.device)
            torch.distributed.all_reduce(sums)
        hits, reciprocal, n = sums.tolist()
        if n:
            net.history.record("valid_acc1", hits / n)
            net.history.record("valid_mrr", reciprocal / n)


class EpochSeed(Callback):
    """Seed torch with ``seed`` + the epoch's number (1-based, over the net's history) at the
    start of every epoch.

    Parameters
    ----------
    seed : int
    """

    def __init__(self, seed):
        self.seed = seed

    def on_epoch_begin(self, net, **kwargs):
        torch.manual_seed(int(self.seed) + len(net.history))


class ResumableLRScheduler(LRScheduler):
    """skorch's :class:`~skorch.callbacks.LRScheduler` that resumes an epoch schedule.

    skorch builds the scheduler with ``last_epoch = len(history) - 1``; the scheduler then steps
    once more at construction, so after a checkpoint (whose optimizer already holds the stepped
    rate) a milestone would apply twice. Here, on a non-empty history, the scheduler starts from
    the initial rate and is stepped once per recorded epoch, as an uninterrupted run was.
    Parameters as skorch's.
    """

    def _get_scheduler(self, net, policy, **scheduler_kwargs):
        done = len(net.history)
        if (not done or self.step_every != "epoch" or policy is ReduceLROnPlateau
                or "last_epoch" in scheduler_kwargs):
            return super()._get_scheduler(net, policy, **scheduler_kwargs)
        for group in net.optimizer_.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        scheduler = policy(net.optimizer_, **scheduler_kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "lr_scheduler.step() before optimizer.step()"
            for _ in range(done):
                scheduler.step()
        return scheduler


class ResumableEarlyStopping(EarlyStopping):
    """skorch's :class:`~skorch.callbacks.EarlyStopping` that resumes from a loaded history.

    At the start of training it replays the monitored scores already in the history (the
    patience used up, the threshold, the best epoch), so a run resumed from a checkpoint stops
    where an uninterrupted one does. With ``load_best`` and ``dirname``, the best weights are
    also kept in ``dirname`` (:data:`BEST_FILE`, with their epoch): written at the start of the
    epoch after an improvement and at the end of training, i.e. after the checkpoint of the
    epoch they belong to, so the file always matches a checkpoint's history.

    Parameters
    ----------
    monitor, patience, threshold, threshold_mode, lower_is_better, sink, load_best
        As skorch's.
    dirname : str or path-like, optional
        Checkpoint directory; None keeps the best weights in memory only (skorch's behaviour).
    """

    def __init__(self, monitor="valid_loss", patience=5, threshold=1e-4, threshold_mode="rel",
                 lower_is_better=True, sink=print, load_best=False, dirname=None):
        super().__init__(monitor=monitor, patience=patience, threshold=threshold, threshold_mode=threshold_mode,
                         lower_is_better=lower_is_better, sink=sink, load_best=load_best)
        self.dirname = dirname

    def replay(self, history):
        """Set the patience used up, the threshold and the best epoch from ``history``.

        Returns
        -------
        bool
            Whether the history ends where this callback stops training.
        """
        self.misses_ = 0
        self.dynamic_threshold_ = np.inf if self.lower_is_better else -np.inf
        self.best_epoch_ = 0
        for row in history:
            if self.monitor not in row:
                continue
            if self._is_score_improved(row[self.monitor]):
                self.misses_ = 0
                self.dynamic_threshold_ = self._calc_new_threshold(row[self.monitor])
                self.best_epoch_ = row["epoch"]
            else:
                self.misses_ += 1
        return self.misses_ >= self.patience

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.saved_epoch_ = 0
        if not len(net.history):
            return
        self.replay(net.history)
        if not (self.load_best and self.best_epoch_):
            return
        if self.best_epoch_ == net.history[-1, "epoch"]:
            self.best_model_weights_ = deepcopy(net.module_.state_dict())
            return
        path = Path(self.dirname) / BEST_FILE if self.dirname is not None else None
        best = torch.load(path, map_location=net.device, weights_only=True) if path and path.is_file() else None
        if best is not None and best.get("epoch") == self.best_epoch_:
            self.best_model_weights_ = best["state_dict"]
            self.saved_epoch_ = self.best_epoch_
        else:
            warnings.warn(f"The best weights of epoch {self.best_epoch_} are not in {path}: training resumes, but "
                          "ends with the last epoch's weights if no later epoch does better.", RuntimeWarning,
                          stacklevel=2)

    def on_epoch_begin(self, net, **kwargs):
        self._save_best()

    def on_epoch_end(self, net, **kwargs):
        """Raises ValueError when no callback recorded the monitored score this epoch (skorch's
        EarlyStopping would raise a bare KeyError)."""
        row = net.history[-1]
        if self.monitor not in row:
            recorded = sorted(k for k in row if k.startswith("valid_") and not k.endswith(("_best", "_count")))
            raise ValueError(
                f"early stopping monitors {self.monitor!r}, which no callback recorded in epoch {row['epoch']} "
                f"(validation scores recorded: {recorded}). valid_acc1 and valid_mrr are recorded by the "
                "valid_ranking callback: a callback that replaces it (callbacks__valid_ranking=...) must record "
                f"them with net.history.record({self.monitor!r}, value), or set the estimator's monitor='valid_loss'.")
        super().on_epoch_end(net, **kwargs)

    def on_train_end(self, net, **kwargs):
        self._save_best()
        super().on_train_end(net, **kwargs)

    def _save_best(self):
        """Write the best weights of an earlier epoch to ``dirname`` (rank 0), once per best epoch."""
        epoch = getattr(self, "best_epoch_", 0)
        if (self.dirname is None or not self.load_best or not epoch or epoch == getattr(self, "saved_epoch_", 0)
                or getattr(self, "best_model_weights_", None) is None):
            return
        if is_main_process():
            path = Path(self.dirname) / BEST_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".part")
            torch.save({"epoch": int(epoch), "state_dict": self.best_model_weights_}, partial)
            os.replace(partial, path)
        self.saved_epoch_ = epoch


def run_fingerprint(params, arrays):
    """A hex digest of a training run: its parameters and the arrays of its data.

    Parameters
    ----------
    params : dict of str -> object
        Values other than None, bool, int, float, str and lists/tuples/dicts of those are
        represented by their type only (their repr may change from one process to the next).
    arrays : iterable of ndarray

    Returns
    -------
    str
    """
    digest = hashlib.sha256(json.dumps(_plain(params), sort_keys=True).encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def claim_checkpoint_dir(dirname, fingerprint):
    """Make ``dirname`` the checkpoint directory of the run ``fingerprint``.

    Parameters
    ----------
    dirname : str or path-like
    fingerprint : str
        :func:`run_fingerprint` of the run.

    Raises
    ------
    ValueError
        If ``dirname`` holds the checkpoint of another run (other data or parameters): resuming
        it would continue that run's training with this data.
    """
    path = Path(dirname) / RUN_FILE
    if path.is_file():
        try:
            claimed = json.loads(path.read_text()).get("fingerprint")
        except (ValueError, AttributeError):
            claimed = None
        if claimed != fingerprint:
            raise ValueError(
                f"checkpoint_dir={os.fspath(dirname)!r} holds the checkpoint of another training run (other data or "
                "parameters; verbose, device, callbacks and checkpoint_dir aside): fit resumes only the run it "
                "belongs to. Give each run its own directory (e.g. one per fold), or delete this one to start "
                "afresh.")
        return
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"fingerprint": fingerprint}))


#: An ANSI colour code of a terminal (skorch's PrintLog colours the best scores).
_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")


class TrainingInterrupted(BaseException):
    """A KeyboardInterrupt (Ctrl-C) carried past skorch's ``partial_fit``, which swallows it to
    keep a half-trained net; :meth:`_EstimatorNet.partial_fit` raises the KeyboardInterrupt again."""


class PlainPrintLog(PrintLog):
    """skorch's epoch table, without its colour codes where standard output is not a terminal
    (a log file read them as ``[36m9.5573[0m``)."""

    def format_row(self, row, key, color):
        text = super().format_row(row, key, color)
        if isinstance(text, str) and not sys.stdout.isatty():
            return _ANSI_CODE.sub("", text)
        return text


class _EstimatorNet:
    """What the estimators' nets change of skorch's :class:`~skorch.NeuralNet`:

    - a KeyboardInterrupt in the training loop is raised by ``partial_fit`` (and ``fit``), so
      that the estimator puts its state back (skorch would return normally with the weights of
      the interrupted batch; :class:`TrainingInterrupted` carries it past skorch); the one skorch's
      :class:`~skorch.callbacks.EarlyStopping` raises to stop training is left to skorch, which
      ends the training there as it should;
    - the epoch table is :class:`PlainPrintLog`'s.
    """

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt as exc:
            if any(isinstance(cb, EarlyStopping) and getattr(cb, "misses_", 0) >= cb.patience
                   for _, cb in getattr(self, "callbacks_", ())):
                raise                       # early stopping: skorch's partial_fit ends the training
            raise TrainingInterrupted() from exc

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        # past skorch's own partial_fit (which fit calls too): the interrupt, as it was raised
        try:
            return super().partial_fit(X, y, classes, **fit_params)
        except TrainingInterrupted as exc:
            raise exc.__cause__ from None

    def get_default_callbacks(self):
        return [(name, PlainPrintLog() if name == "print_log" else callback)
                for name, callback in super().get_default_callbacks()]


class TrainingNet(_EstimatorNet, NeuralNet):
    """The estimators' :class:`skorch.NeuralNet` (see :class:`_EstimatorNet`)."""


class DistributedTrainingNet(_EstimatorNet, DistributedNeuralNet):
    """:class:`trajmoe.nn.parallel.DistributedNeuralNet` as the estimators run it (see
    :class:`_EstimatorNet`)."""
