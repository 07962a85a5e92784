"""Cross-city pre-training at scale: N processes under torchrun, windows streamed from disk,
checkpoints every epoch, and the ``trajmoe pretrain`` command.

:func:`pretrain` is ``model.fit`` for big runs: the same training (single-city batches, early
stopping on held-out users) on a visit frame or on a :class:`trajmoe.streaming.WindowStore`,
in one process or data-parallel on every rank of a ``torchrun`` group
(:mod:`trajmoe.nn.parallel`), with a checkpoint that rank 0 writes after every epoch and that
a restarted run resumes from. The command line::

    torchrun --standalone --nproc_per_node=4 -m trajmoe.cli pretrain \\
        --windows runs/store/ --output runs/model/ --checkpoint-dir runs/ckpt/

runs it on 4 processes (one per GPU; gloo on CPUs), and the same line again resumes.
See the user guide's page "Training at scale".
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["pretrain", "add_pretrain_command", "run_pretrain_command"]


def pretrain(model, data, pois=None, checkpoint_dir=None):
    """Pre-train ``model`` on every city of ``data``, on this process's share of the work.

    Call it on every rank (the same arguments everywhere) after
    :func:`trajmoe.nn.parallel.init_from_env`; in a plain process it is ``model.fit`` with
    checkpoints.

    Parameters
    ----------
    model : NeuralNextLocationEstimator
        E.g. :class:`~trajmoe.TrajMoERegressor` (``batch_size`` is the GLOBAL batch: each of
        N ranks takes 1/N of every batch).
    data : DataFrame of shape (n_visits, n_columns) or WindowStore
        A visit frame (every rank holds it all), or windows written by
        :func:`trajmoe.streaming.write_windows` (read a few row groups at a time).
    pois : DataFrame, optional
        POI frame (frames only; a store has its encoder).
    checkpoint_dir : str or path-like, optional
        None: the model's own ``checkpoint_dir``. Rank 0 writes the weights, optimizer state and history there after every epoch; if a
        checkpoint is there already, training resumes from it
        (:func:`trajmoe.nn.parallel.resume_from_checkpoint`).

    Returns
    -------
    model
        Fitted, as after ``fit``.

    Raises
    ------
    ValueError
        If the model's window parameters differ from those of the store.
    """
    from .nn.data import WindowDataset
    from .streaming import WindowStore

    if isinstance(data, WindowStore):
        data.check_model(model)
        model._check_params()
        model.encoder_ = data.encoder
        model.cities_ = list(model.encoder_.cities_)
        train, valid = data.windows("train"), data.windows("valid")
    else:
        model._fit_encoder(data, pois, partial=False)
        train, valid = model._training_windows(data, holdout=True)
        train, valid = WindowDataset(train), (WindowDataset(valid) if valid is not None else None)
    if checkpoint_dir is None:
        checkpoint_dir = getattr(model, "checkpoint_dir", None)
    return model._fit_windows(train, valid, checkpoint_dir=checkpoint_dir)


def add_pretrain_command(subparsers, number):
    """Add ``trajmoe pretrain`` to the command line's subparsers (``number``: the CLI's
    bounded-number argparse type factory)."""
    from .cli import MAX_SEED
    cmd = subparsers.add_parser(
        "pretrain", allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="cross-city pre-training, on N processes under torchrun, with checkpoints",
        description="Pre-train TrajMoE on source cities (or on windows written with "
                    "trajmoe.streaming.write_windows) and save it (rank 0). Under torchrun every process "
                    "trains on its share of each batch; the same command resumes from --checkpoint-dir.",
        epilog="example: torchrun --standalone --nproc_per_node=4 -m trajmoe.cli pretrain "
               "--sources singapore,edinburgh --output runs/model/ --checkpoint-dir runs/ckpt/")
    data = cmd.add_mutually_exclusive_group(required=True)
    data.add_argument("--sources", help="comma-separated cities (see `trajmoe demo --help`)")
    data.add_argument("--windows", help="folder of a window store (trajmoe.streaming.write_windows)")
    cmd.add_argument("--output", required=True, help="folder the trained model is saved to (rank 0)")
    cmd.add_argument("--checkpoint-dir", default=None, help="checkpoint every epoch here; resume if one is there")
    cmd.add_argument("--preset", choices=("small", "base", "ultra"), default="small", help="network size")
    cmd.add_argument("--max-epochs", type=number(int, 1), default=50,
                     help="epochs at most; early stopping on 10 %% held-out users may stop first")
    cmd.add_argument("--batch-size", type=number(int, 1), default=64, help="global batch (all processes)")
    cmd.add_argument("--seed", type=number(int, 0, MAX_SEED), default=0,
                     help="random_state of the model: initialisation, held-out users, batch order")
    cmd.add_argument("--device", default="auto",
                     help="auto, cpu or cuda (under torchrun: each process the GPU of its LOCAL_RANK, in an NCCL "
                          "group; cpu: a gloo group)")
    cmd.add_argument("--data-home", default=None, help="data folder; unset: $TRAJMOE_DATA")
    return cmd


def _check_output_folder(parser, out, flag="--output"):
    """``--output`` (or ``--checkpoint-dir``) can become a folder (save_model and the checkpoints
    create it): checked before any training, which would otherwise be lost at the end."""
    import os

    if out.exists() and not out.is_dir():
        parser.error(f"{flag} {out} is a file: give a folder (several files are written into it)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        parser.error(f"{flag} {out}: {existing} is not a writable folder")


def run_pretrain_command(args, parser):
    """Run ``trajmoe pretrain`` with parsed ``args``; returns the exit status."""
    from .cli import _check_data_home, _concat, check_sources, load_city
    from .estimators import TrajMoERegressor
    from .estimators._neural import check_device
    from .nn.parallel import init_from_env, is_main_process
    from .persistence import save_model
    from .streaming import WindowStore

    try:                                        # before loading data or joining a group
        check_device(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    _check_output_folder(parser, Path(args.output))
    if args.checkpoint_dir is not None:
        _check_output_folder(parser, Path(args.checkpoint_dir), "--checkpoint-dir")
    params = dict(preset=args.preset, max_epochs=args.max_epochs, batch_size=args.batch_size,
                  random_state=args.seed, device=args.device, verbose=1)
    if args.windows is not None:
        try:
            data = WindowStore(args.windows)
        except (FileNotFoundError, ValueError) as exc:
            parser.error(str(exc))
        params.update(data.meta["params"])
        pois = None
    else:
        try:
            cities = check_sources(args.sources)
        except ValueError as exc:
            parser.error(f"--sources: {exc}")
        _check_data_home(parser, args.data_home)
        try:
            loaded = [load_city(c, args.data_home) for c in cities]
        except FileNotFoundError as exc:       # the data folder lacks a city's files (the message says which)
            parser.error(str(exc))
        data, pois = _concat([v for v, _ in loaded]), _concat([p for _, p in loaded])
    try:
        rank, world = init_from_env(device=args.device)
    except ValueError as exc:                   # e.g. --device cuda:0 on the rank of another GPU
        parser.error(f"--device: {exc}")
    model = pretrain(TrajMoERegressor(**params), data, pois=pois, checkpoint_dir=args.checkpoint_dir)
    if is_main_process():
        save_model(model, Path(args.output))
        print(f"rank {rank} of {world}: model saved to {args.output}")
    return 0
