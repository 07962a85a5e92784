"""Cross-city pre-training at scale: N processes under torchrun, windows streamed from disk,
checkpoints every epoch (the ``trajmoe pretrain`` command of :mod:`trajmoe.cli` runs it).

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


__all__ = ["pretrain"]


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
    KeyboardInterrupt
        If the run is interrupted (Ctrl-C, a stopped job): the model is left as it was, and the
        checkpoints written so far resume the run when it is started again.

    Notes
    -----
    Atomic, as ``fit``: if it raises, the model is left as it was before the call.
    """
    from .nn.data import WindowDataset
    from .streaming import WindowStore

    with model._atomic_update():          # a failed or interrupted run leaves the model as it was
        if isinstance(data, WindowStore):
            data.check_model(model)
            model._check_params()
            model.encoder_ = data.encoder
            model.cities_ = list(model.encoder_.cities_)
            # the times' zones and forms the store's frames had, as fit records them from its frame
            for name in ("time_zones", "time_forms"):
                model.__dict__.pop(f"{name}_", None)
                if data.meta.get(name) is not None:
                    setattr(model, f"{name}_", dict(data.meta[name]))
            train, valid = data.windows("train"), data.windows("valid")
        else:
            model._fit_encoder(data, pois, partial=False)
            train, valid = model._training_windows(data, holdout=True)
            train, valid = WindowDataset(train), (WindowDataset(valid) if valid is not None else None)
        if checkpoint_dir is None:
            checkpoint_dir = getattr(model, "checkpoint_dir", None)
        return model._fit_windows(train, valid, checkpoint_dir=checkpoint_dir)
