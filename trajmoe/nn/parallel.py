"""Data-parallel training on PyTorch's own engine: DistributedDataParallel under torchrun.

Every rank (process; one per GPU, or several CPU processes) builds the same global batches
(same sampler, same seed) and trains on its share of each one: the windows ``r, r + W, r + 2W,
...`` of the batch on rank ``r`` of ``W``. All ranks therefore work on ONE city in a step, as
the retrieval head needs, and the step is the one a single process takes on the whole batch:

- the loss of a rank is its sums of token losses divided by the numbers of tokens of the
  WHOLE batch (all-reduced first), times ``W``, so that DDP's mean of the ranks' gradients is
  exactly the gradient of the undivided batch's loss (:meth:`trajmoe.nn.TrajMoELoss.sums`);
- the loss recorded in the history is the batch's loss over all ranks, with the batch's
  global size, so that every rank records the curve a single process would;
- a rank whose share is empty (a batch of fewer than ``W`` windows) takes one window with
  every target ignored: it runs forward and backward (DDP needs every rank) but adds nothing.

Only rank 0 writes files (:func:`is_main_process`; :class:`RankZeroCheckpoint`).

Processes join a group with :func:`init_from_env` (the variables ``torchrun`` sets); the
estimators see the group (:func:`is_distributed`) and train data-parallel without any change
to their API.

References
----------
Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020;
https://pytorch.org/docs/stable/elastic/run.html (torchrun); docs/method.rst, "Training protocol" (single-city
batches).
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from skorch import NeuralNet
from skorch.callbacks import Checkpoint
from skorch.utils import to_tensor
from torch.nn.parallel import DistributedDataParallel

from .._constants import IGNORE_INDEX, TOKEN_TARGETS
from .data import CityBatchSampler

#: Buffers (the city tables) are identical on every rank: no broadcast at every forward
#: (the keyword's name changed in torch 2.13).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})

__all__ = ["init_from_env", "is_distributed", "rank_and_world", "is_main_process", "rank_device",
           "BatchShare", "share_rows", "ShardedCityBatchLoader", "DistributedNeuralNet", "RankZeroCheckpoint",
           "resume_from_checkpoint"]


def rank_and_world():
    """Rank of this process and number of processes of the default group.

    Returns
    -------
    (rank, world_size) : tuple of int
        ``(0, 1)`` when no process group is initialised.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed():
    """True when a process group of more than one process is initialised."""
    return rank_and_world()[1] > 1


def is_main_process():
    """True on rank 0 (and in a single process): the one rank that writes files."""
    return rank_and_world()[0] == 0


def rank_device(device):
    """The device of this rank: ``"cuda"`` becomes ``"cuda:<LOCAL_RANK>"`` in a process group.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or an explicit ``"cuda:<i>"`` (kept as it is).

    Returns
    -------
    str
    """
    if device == "cuda" and is_distributed():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def _env_int(name, default, minimum):
    """The integer environment variable ``name`` (``default`` when unset), at least ``minimum``;
    a RuntimeError naming it otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise RuntimeError(f"the environment variable {name}={os.environ[name]!r} must be an integer >= {minimum} "
                           "(torchrun sets it: launch with `torchrun --nproc_per_node=N ...`).")
    return value


def init_from_env(backend=None, timeout_s=1800, device="auto"):
    """Join the process group that ``torchrun`` describes in the environment.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` (set by
    ``torchrun``); does nothing in a plain single process (no ``WORLD_SIZE`` or 1) or when a group
    exists already. Ranks that train on CUDA each take the GPU of their ``LOCAL_RANK``.

    Parameters
    ----------
    backend : str or None, default None
        A ``torch.distributed`` backend (``"nccl"``, ``"gloo"``, ...). None: the one for ``device``:
        ``"nccl"`` when the ranks train on CUDA GPUs, else ``"gloo"`` (CPU), so that
        ``device="cpu"`` on a machine with a GPU still joins a CPU group.
    timeout_s : float, default 1800
        Seconds a collective may wait for the other ranks.
    device : str or torch.device, default "auto"
        Where the ranks train, as the estimators' ``device`` (``"auto"``: CUDA when present;
        ``"cuda"``: each rank the GPU of its ``LOCAL_RANK``).

    Returns
    -------
    (rank, world_size) : tuple of int

    Raises
    ------
    ValueError
        With ``WORLD_SIZE`` > 1 (``device`` is not read otherwise): if ``device`` is not a torch
        device, names a GPU other than this rank's (``"cuda:0"`` on ``LOCAL_RANK`` 1), or is the
        CPU with ``backend="nccl"`` (NCCL moves CUDA tensors only).
    RuntimeError
        If ``WORLD_SIZE`` is not an integer >= 1; with ``WORLD_SIZE`` > 1, if ``RANK``,
        ``MASTER_ADDR`` or ``MASTER_PORT`` is missing or empty (not launched by torchrun), if
        ``RANK`` or ``LOCAL_RANK`` is not an integer >= 0, or if the ranks train on CUDA and this
        node has no GPU or fewer GPUs than ranks (``LOCAL_RANK`` beyond the GPUs torch sees).
    """
    world = _env_int("WORLD_SIZE", 1, 1)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return rank_and_world()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name, "").strip()]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {missing} are not set (or empty): launch with "
                           "`torchrun --nproc_per_node=N ...`, which sets them.")
    _env_int("RANK", 0, 0)
    local_rank = _env_int("LOCAL_RANK", 0, 0)
    if device == "auto":
        on_gpu = torch.cuda.is_available()
    else:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device={device!r} is not a torch device: use 'auto' (CUDA when present, else the "
                             "CPU), 'cpu' or 'cuda' (each rank the GPU of its LOCAL_RANK).") from None
        on_gpu = chosen.type == "cuda"
        if on_gpu and chosen.index is not None and chosen.index != local_rank:
            raise ValueError(f"device={device!r} puts this rank (LOCAL_RANK={local_rank}) on GPU {chosen.index}, "
                             "the GPU of another rank: use device='cuda' (each rank the GPU of its LOCAL_RANK).")
    backend = ("nccl" if on_gpu else "gloo") if backend is None else str(backend).lower()
    if backend == "nccl" and not on_gpu:
        raise ValueError(f"backend='nccl' moves CUDA tensors only, and device={device!r} trains on the CPU: use "
                         "backend='gloo' (or None, which follows the device), or a CUDA device.")
    if on_gpu:
        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise RuntimeError(f"device={device!r} trains on CUDA, but torch sees no CUDA GPU on this node: train "
                               "on the CPU (device='cpu', `--device cpu`; backend 'gloo').")
        if local_rank >= gpus:
            raise RuntimeError(f"LOCAL_RANK={local_rank}, but torch sees {gpus} CUDA GPU(s) on this node: start "
                               f"one process per GPU (`torchrun --nproc_per_node={gpus}`), or train on the CPU "
                               "(device='cpu', `--device cpu`).")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return rank_and_world()


@dataclass(frozen=True)
class BatchShare:
    """What a rank's share of a global batch stands for.

    Attributes
    ----------
    n_windows : int
        Windows of the whole (global) batch, the batch size recorded in the history.
    real : bool
        False for the placeholder of an empty share (targets all ignored).
    """

    n_windows: int
    real: bool = True


def share_rows(n, rank, world_size):
    """Rows of a global batch of ``n`` windows that rank ``rank`` of ``world_size`` trains on.

    Parameters
    ----------
    n, rank, world_size : int

    Returns
    -------
    rows : ndarray of int64, shape (n_share,)
        ``rank, rank + W, ...`` (strided: windows of a batch are sorted by length, so that every
        rank gets long and short ones); ``[0]`` when that would be empty.
    real : bool
        False when the share is a placeholder (``n <= rank``).
    """
    rows = np.arange(rank, n, world_size, dtype=np.int64)
    if len(rows):
        return rows, True
    return np.zeros(1, np.int64), False


def ignore_targets(y):
    """A copy of target dict ``y`` with every target ignored (a placeholder share)."""
    return {k: torch.full_like(v, IGNORE_INDEX) if k in TOKEN_TARGETS else v for k, v in y.items()}


class ShardedCityBatchLoader:
    """This rank's shares of the single-city batches of :class:`trajmoe.nn.CityBatchSampler`.

    Every rank draws the same global batches (same ``random_state``) and yields
    ``(X, y, share)`` for its rows of each (:func:`share_rows`), so that the ranks of a step
    work on one city and together on exactly the batch a single process would take.

    Parameters
    ----------
    dataset : WindowDataset
    batch_size : int, default 32
        Windows per GLOBAL batch (all ranks together).
    shuffle : bool, default False
    random_state : int or None
    skip_epochs : int, default 0
        Epoch orders to draw and discard first: a run resumed after ``k`` epochs passes ``k``
        and goes on with the order of epoch ``k + 1``.
    rank, world_size : int or None
        None: from the process group (:func:`rank_and_world`).
    """

    def __init__(self, dataset, batch_size=32, shuffle=False, random_state=None, skip_epochs=0,
                 rank=None, world_size=None):
        self.dataset = dataset
        self.sampler = CityBatchSampler(dataset.city, dataset.lengths, batch_size, shuffle, random_state)
        self.sampler.skip(skip_epochs)
        default_rank, default_world = rank_and_world()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            rows, real = share_rows(len(batch), self.rank, self.world_size)
            X, y = self.dataset[batch[rows]]
            yield X, (y if real else ignore_targets(y)), BatchShare(len(batch), real)


class DistributedNeuralNet(NeuralNet):
    """A skorch :class:`~skorch.NeuralNet` that trains data-parallel across a process group.

    Its iterators yield ``(X, y, share)`` (:class:`ShardedCityBatchLoader`, or
    :class:`trajmoe.nn.shards.ParquetWindows`). During ``fit``/``partial_fit`` the module
    is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (``module_`` itself stays
    the plain network, so the estimators reach its cities and blocks as usual); in a single
    process it trains as a plain net on the whole batches. The criterion must offer
    :meth:`trajmoe.nn.TrajMoELoss.sums`.

    The DDP wrapper exists only while a fit runs in a group of more than one process.
    """

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        if not is_distributed():
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        device = torch.device(self.device)
        # parameters and buffers are identical on every rank (same seed, same city tables);
        # broadcasting buffers each step would only cost time.
        # a wrapper for this fit only: kept out of skorch's registry of modules (and of pickles)
        self.__dict__["_ddp"] = DistributedDataParallel(
            self.module_, device_ids=[device.index] if device.type == "cuda" else None,
            # per-city tables of the cities a step does not see, experts top-k routing does not choose
            find_unused_parameters=getattr(self.module_, "may_skip_parameters", lambda: True)(),
            **_NO_BUFFER_SYNC)
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        finally:
            self.__dict__.pop("_ddp", None)

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if iterator is None:
            return
        batch_count = 0
        for batch in iterator:
            Xi, yi, share = batch
            self.notify("on_batch_begin", batch=(Xi, yi), training=training)
            step = step_fn(batch, **fit_params)
            self.history.record_batch(prefix + "_loss", step["loss"].item())
            self.history.record_batch(prefix + "_batch_size", share.n_windows)
            self.notify("on_batch_end", batch=(Xi, yi), training=training, **step)
            batch_count += 1
        self.history.record(prefix + "_batch_count", batch_count)

    def _forward_share(self, batch, training, **fit_params):
        Xi, yi, _ = batch
        x = {**to_tensor(Xi, device=self.device), **fit_params}
        yi = to_tensor(yi, device=self.device)
        module = getattr(self, "_ddp", None) if training else None
        return (module or self.module_)(**x), yi

    def _share_loss(self, y_pred, y_true):
        """(loss to backpropagate on this rank, loss of the global batch)."""
        location_sum, n_location, time_sum, n_time = self.criterion_.sums(y_pred, y_true)
        stats = torch.stack([location_sum.detach(), n_location, time_sum.detach(), n_time]).to(torch.float64)
        rank, world = rank_and_world()
        if world > 1:
            dist.all_reduce(stats)
        g_location, g_n_location, g_time, g_n_time = stats.tolist()
        weight = self.criterion_.time_weight
        loss = 0.0 * y_pred["query"].sum()
        total = 0.0
        if g_n_location > 0:
            loss = loss + location_sum / g_n_location
            total += g_location / g_n_location
        if g_n_time > 0:
            loss = loss + weight * time_sum / g_n_time
            total += weight * g_time / g_n_time
        return loss * world, torch.tensor(total)

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        y_pred, y_true = self._forward_share(batch, True, **fit_params)
        loss, total = self._share_loss(y_pred, y_true)
        loss.backward()
        return {"loss": total, "y_pred": y_pred}

    def validation_step(self, batch, **fit_params):
        self._set_training(False)
        with torch.no_grad():
            y_pred, y_true = self._forward_share(batch, False, **fit_params)
            _, total = self._share_loss(y_pred, y_true)
        return {"loss": total, "y_pred": y_pred}

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_ddp", None)
        return state


class RankZeroCheckpoint(Checkpoint):
    """skorch's :class:`~skorch.callbacks.Checkpoint`, written by rank 0 only.

    Every rank takes the same decisions (the histories agree); only rank 0 touches the files.
    """

    def save_model(self, net):
        if is_main_process():
            super().save_model(net)


#: Files of a training checkpoint (skorch's :meth:`~skorch.NeuralNet.save_params`), in the
#: order they are written: the history last, so that its presence marks a whole checkpoint.
CHECKPOINT_FILES = {"f_params": "params.pt", "f_optimizer": "optimizer.pt", "f_history": "history.json"}


def resume_from_checkpoint(net, dirname):
    """Resume ``net`` from the checkpoint in ``dirname`` if there is one, and checkpoint there.

    Loads the weights, the optimizer state (learning rate included) and the history that
    rank 0 wrote after the last finished epoch; the batch order goes on with the next epoch
    (``iterator_train__skip_epochs``) and the learning-rate schedule from the history's
    length. Then adds a :class:`RankZeroCheckpoint` that writes all three after every epoch.
    Every rank reads the same files: ``dirname`` must be on a file system they share.

    Parameters
    ----------
    net : skorch.NeuralNet
        Initialised, with the city tables of the run (same shapes as the checkpoint's).
    dirname : str or path-like

    Returns
    -------
    int
        Epochs the checkpoint had finished (0 without one).

    Notes
    -----
    With the callbacks of the neural estimators (:mod:`trajmoe.estimators._training`), early
    stopping and the learning-rate schedule resume where the history left off and every epoch
    is seeded from its number, so the run ends as an uninterrupted one; with skorch's own
    EarlyStopping, the patience starts afresh. The number of processes may differ (the global
    batches do not).
    """
    checkpoint = RankZeroCheckpoint(monitor=None, dirname=os.fspath(dirname), f_criterion=None,
                                    load_best=False, **CHECKPOINT_FILES)
    done = 0
    if os.path.exists(os.path.join(os.fspath(dirname), CHECKPOINT_FILES["f_history"])):
        net.load_params(checkpoint=checkpoint)
        done = len(net.history)
    net.set_params(callbacks=[*net.callbacks, ("checkpoint", checkpoint)])
    net.initialize_callbacks()   # skorch's set_params(callbacks=...) leaves the initialised ones as they were
    net.iterator_train__skip_epochs = done   # a loader argument, read when fit makes the loader
    return done
