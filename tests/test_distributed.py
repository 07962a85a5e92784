"""Data-parallel training (trajmoe.nn.parallel): 2 CPU processes with gloo on the loopback
interface train the same model as 1 process with the same global batch.

Real data, small: 14 users of YJMob100K city A and 6 of Foursquare NYC, so that batches of two
cities alternate. Dropout is off (its masks are per process), everything else is the default
training loop (AdamW, step decay, gradient clipping, early stopping on held-out users).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skorch.callbacks import Callback

from trajmoe import SpatialSemanticEncoder, TrajMoERegressor
from trajmoe.datasets import load_foursquare_nyc, load_yjmob100k
from trajmoe.nn.data import CityBatchSampler, WindowDataset
from trajmoe.nn.parallel import ShardedCityBatchLoader, share_rows
from trajmoe.persistence import load_model
from trajmoe.scale import pretrain
from trajmoe.streaming import write_windows

# closed vocabulary (visited cells only): a few hundred candidates per city keep a step fast
PARAMS = dict(encoder=SpatialSemanticEncoder(region_margin=None), d_model=16, n_layers=1, n_heads=2,
              dropout=0.0, max_epochs=5, batch_size=12, patience=10, validation_fraction=0.2, device="cpu",
              random_state=0)
WORLD = 2
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _users(visits, n):
    return visits[visits["user_id"].isin(visits["user_id"].unique()[:n])]


@pytest.fixture(scope="module")
def visits(data_home):
    return pd.concat([_users(load_yjmob100k("A").visits, 14), _users(load_foursquare_nyc().visits, 6)],
                     ignore_index=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_rank(rank, world, port, data_path, out_path, params):
    """One rank: join the gloo group on 127.0.0.1, fit, write the history and the weights."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        X = pd.read_pickle(data_path)
        model = TrajMoERegressor(**params).fit(X)
        state = {k: v.detach().clone() for k, v in model.net_.module_.state_dict().items()}
        with open(f"{out_path}.{rank}", "wb") as f:
            pickle.dump({"history": model.history_, "state": state, "net": type(model.net_).__name__}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("extra", [{}, {"cell_embedding": True}], ids=["default", "per-city tables"])
def test_two_gloo_processes_train_the_model_of_one(visits, tmp_path, extra):
    """The default network uses every parameter in every step (DDP without the search for unused
    parameters); with per-city cell embeddings a step leaves the other city's table out, which
    DDP must be told (it raises otherwise)."""
    params = {**PARAMS, **extra}
    single = TrajMoERegressor(**params).fit(visits)
    assert single.net_.module_.may_skip_parameters() == bool(extra)
    data_path = tmp_path / "visits.pkl"
    visits.to_pickle(data_path)
    out = tmp_path / "rank"
    mp.spawn(_train_rank, args=(WORLD, _free_port(), str(data_path), str(out), params), nprocs=WORLD, join=True)
    ranks = [pickle.loads((tmp_path / f"rank.{r}").read_bytes()) for r in range(WORLD)]

    assert type(single.net_).__name__ == "TrainingNet"     # no group: the plain, unchanged path
    assert ranks[0]["net"] == "DistributedTrainingNet"

    expected = single.history_
    assert len(expected) == PARAMS["max_epochs"]
    for r in ranks:
        got = r["history"]
        assert len(got) == len(expected)
        # the curves of one process, to float32 round-off (sums of a split batch in another order)
        np.testing.assert_allclose(got["train_loss"], expected["train_loss"], rtol=2e-5)
        np.testing.assert_allclose(got["valid_loss"], expected["valid_loss"], rtol=2e-5)
        np.testing.assert_allclose(got["lr"], expected["lr"])
    # every rank ends with exactly the same weights (one all-reduced gradient per step)
    for name, value in ranks[0]["state"].items():
        torch.testing.assert_close(ranks[1]["state"][name], value, rtol=0, atol=0)


def test_shares_of_a_batch_cover_it_once_and_keep_one_city(visits):
    model = TrajMoERegressor(**PARAMS)
    model._fit_encoder(visits, None, partial=False)
    train, _ = model._training_windows(visits, holdout=False)
    dataset = WindowDataset(train)
    single = list(CityBatchSampler(dataset.city, dataset.lengths, 5, shuffle=True, random_state=3))
    loaders = [ShardedCityBatchLoader(dataset, 5, shuffle=True, random_state=3, rank=r, world_size=3)
               for r in range(3)]
    for batch, *shares in zip(single, *loaders, strict=True):
        cities = {int(c) for X, _, share in shares if share.real for c in X["city"]}
        assert cities == {int(dataset.city[batch[0]])}
        assert all(share.n_windows == len(batch) for _, _, share in shares)
        assert sum(len(X["city"]) for X, _, share in shares if share.real) == len(batch)


def test_empty_share_is_a_placeholder_without_targets():
    rows, real = share_rows(2, 3, 4)
    assert not real and rows.tolist() == [0]
    rows, real = share_rows(9, 1, 4)
    assert real and rows.tolist() == [1, 5]


def test_resumed_loader_goes_on_with_the_next_epoch_order(visits):
    model = TrajMoERegressor(**PARAMS)
    model._fit_encoder(visits, None, partial=False)
    dataset = WindowDataset(model._training_windows(visits, holdout=False)[0])
    run = ShardedCityBatchLoader(dataset, 8, shuffle=True, random_state=1, rank=0, world_size=1)
    epochs = [[X["city"].tolist() + X["slot"][:, 0].tolist() for X, _, _ in run] for _ in range(3)]
    resumed = ShardedCityBatchLoader(dataset, 8, shuffle=True, random_state=1, skip_epochs=2, rank=0, world_size=1)
    assert [X["city"].tolist() + X["slot"][:, 0].tolist() for X, _, _ in resumed] == epochs[2]


class _StopAfter(Callback):
    """Interrupt training (as a killed job would) after ``n`` epochs."""

    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) >= self.n:
            raise KeyboardInterrupt


def test_a_run_resumes_from_its_checkpoint(visits, tmp_path, monkeypatch, capsys):
    """Interrupted in epoch 2 of 5 and started again with the same arguments, a run ends with
    the loss curve of an uninterrupted one (weights, optimizer, schedule and batch order resume)."""
    whole = pretrain(TrajMoERegressor(**PARAMS), visits, checkpoint_dir=tmp_path / "whole")
    callbacks = TrajMoERegressor._callbacks
    monkeypatch.setattr(TrajMoERegressor, "_callbacks",
                        lambda self, *args, **kw: callbacks(self, *args, **kw) + [("stop", _StopAfter(2))])
    interrupted = TrajMoERegressor(**PARAMS)
    with pytest.raises(KeyboardInterrupt):          # the job is stopped: the model stays unfitted
        pretrain(interrupted, visits, checkpoint_dir=tmp_path / "run")
    assert not hasattr(interrupted, "net_")
    monkeypatch.setattr(TrajMoERegressor, "_callbacks", callbacks)
    # the interrupted epoch 2 left no checkpoint (its callbacks stopped before): epoch 1 did
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 1
    capsys.readouterr()
    resumed = pretrain(TrajMoERegressor(**{**PARAMS, "verbose": 1}), visits, checkpoint_dir=tmp_path / "run")
    assert f"resumed from the checkpoint in {tmp_path / 'run'}: 1 epoch done; 4 to go" in capsys.readouterr().out
    pretrain(TrajMoERegressor(**{**PARAMS, "verbose": 1}), visits, checkpoint_dir=tmp_path / "whole")
    assert "5 epochs done; training had finished, nothing to train" in capsys.readouterr().out
    assert (tmp_path / "whole" / "params.pt").is_file()
    np.testing.assert_allclose(resumed.history_["train_loss"], whole.history_["train_loss"], rtol=1e-6)
    np.testing.assert_allclose(resumed.history_["valid_loss"], whole.history_["valid_loss"], rtol=1e-6)
    np.testing.assert_allclose(resumed.history_["lr"], whole.history_["lr"])


def test_the_pretrain_command_under_torchrun_trains_on_two_processes_and_saves_once(visits, tmp_path):
    """The README's scale-out command, as a user runs it: ``torchrun --standalone`` starts two CPU
    processes (gloo) that pre-train on a window store of two cities; rank 0 alone saves, and the
    saved model loads back and predicts."""
    write_windows(TrajMoERegressor(**PARAMS), [visits], tmp_path / "store")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "-m", "trajmoe.cli", "pretrain", "--windows", str(tmp_path / "store"), "--output",
               str(tmp_path / "model"), "--checkpoint-dir", str(tmp_path / "checkpoints"), "--max-epochs", "2",
               "--batch-size", "12", "--device", "cpu"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("model saved to") == 1 and f"rank 0 of {WORLD}" in run.stdout
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(row["train_loss"]) and np.isfinite(row["valid_loss"]) for row in history)
    model = load_model(tmp_path / "model")
    assert model.verbose == 0                     # the command printed its epochs; the saved model is quiet
    nyc = visits[visits["city"] == "nyc"]
    labels = model.predict(nyc)
    assert len(labels) == len(nyc) and set(model.cities_) == set(visits["city"])
    np.testing.assert_array_equal(load_model(tmp_path / "model").predict(nyc), labels)


TORCHRUN_ENV = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def _fake_gpu_node(monkeypatch, gpus, rank):
    """A node with ``gpus`` CUDA GPUs as rank ``rank`` of 2 under torchrun, without a GPU or a group:
    the ``set_device`` and ``init_process_group`` calls are recorded in the list returned."""
    from trajmoe.nn import parallel

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(parallel.dist, "init_process_group", lambda name, **kw: calls.append(("group", name)))
    monkeypatch.setattr(parallel, "rank_and_world", lambda: (rank, 2))
    for name, value in {**TORCHRUN_ENV, "RANK": str(rank), "LOCAL_RANK": str(rank)}.items():
        monkeypatch.setenv(name, value)
    return calls


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("auto", "nccl"), ("cuda", "nccl")])
def test_the_group_backend_follows_where_the_ranks_train(monkeypatch, device, backend):
    """On a node with one GPU, ``--device cpu`` joins a gloo group (found on an H200 machine: the
    torchrun test above asked for NCCL there); CUDA ranks join NCCL on their own GPU."""
    from trajmoe.nn import parallel

    calls = _fake_gpu_node(monkeypatch, gpus=1, rank=0)
    assert parallel.init_from_env(device=device) == (0, 2)
    assert calls == ([("group", "gloo")] if backend == "gloo" else [("set_device", 0), ("group", "nccl")])
    # a second rank on a one-GPU node: told to start one process per GPU, or to train on the CPU
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls.clear()
    if backend == "nccl":
        with pytest.raises(RuntimeError,
                           match=r"LOCAL_RANK=1, but torch sees 1 CUDA GPU.*--nproc_per_node=1.*--device cpu"):
            parallel.init_from_env(device=device)
        assert calls == []
    else:
        parallel.init_from_env(device=device)
        assert calls == [("group", "gloo")]                 # no GPU taken by a CPU rank


def test_joining_a_group_refuses_what_would_put_ranks_on_the_wrong_device(monkeypatch):
    from trajmoe.nn import parallel

    calls = _fake_gpu_node(monkeypatch, gpus=2, rank=1)
    env = {**TORCHRUN_ENV, "RANK": "1", "LOCAL_RANK": "1"}
    # rank 1 told to train on GPU 0, the GPU of rank 0
    with pytest.raises(ValueError, match=r"device='cuda:0' puts this rank \(LOCAL_RANK=1\) on GPU 0.*device='cuda'"):
        parallel.init_from_env(device="cuda:0")
    assert parallel.init_from_env(device="cuda:1") == (1, 2) and calls == [("set_device", 1), ("group", "nccl")]
    for bad in ("CUDA", "gpu", ""):
        with pytest.raises(ValueError, match=f"device={bad!r} is not a torch device"):
            parallel.init_from_env(device=bad)
    # an explicit backend: its name in any case, and CUDA ranks still take their own GPU
    calls.clear()
    parallel.init_from_env(backend="NCCL", device="cuda")
    parallel.init_from_env(backend="gloo", device="cuda")
    assert calls == [("set_device", 1), ("group", "nccl"), ("set_device", 1), ("group", "gloo")]
    with pytest.raises(ValueError, match=r"backend='nccl' moves CUDA tensors only, and device='cpu'"):
        parallel.init_from_env(backend="nccl", device="cpu")
    for name, value, message in (("LOCAL_RANK", "abc", "LOCAL_RANK='abc' must be an integer >= 0"),
                                 ("LOCAL_RANK", "-1", "LOCAL_RANK='-1' must be an integer >= 0"),
                                 ("WORLD_SIZE", "two", "WORLD_SIZE='two' must be an integer >= 1"),
                                 ("WORLD_SIZE", "0", "WORLD_SIZE='0' must be an integer >= 1"),
                                 ("MASTER_ADDR", "", r"\['MASTER_ADDR'\] are not set \(or empty\)")):
        monkeypatch.setenv(name, value)
        with pytest.raises(RuntimeError, match=message):
            parallel.init_from_env(device="cpu")
        monkeypatch.setenv(name, env[name])
    # a node without a GPU: no advice to start 0 processes
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(RuntimeError, match=r"sees no CUDA GPU on this node: train on the CPU \(device='cpu'"):
        parallel.init_from_env(device="cuda")


def test_the_pretrain_command_checks_its_device_before_it_loads_data(capsys, monkeypatch, tmp_path):
    from trajmoe import cli

    monkeypatch.setattr(cli, "load_city", lambda *a, **k: pytest.fail("data loaded"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["pretrain", "--sources", "nyc", "--device", "gpu", "--output", str(tmp_path / "model")])
    assert exit_info.value.code == 2
    assert "--device: device='gpu' is not a torch device" in capsys.readouterr().err
    # the output folder too: training would be lost where save_model cannot write it at the end
    (tmp_path / "afile").write_text("")
    for output, message in [(tmp_path / "afile", "is a file: give a folder"),
                            (tmp_path / "afile" / "model", f"{tmp_path / 'afile'} is not a writable folder")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["pretrain", "--sources", "nyc", "--output", str(output)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--sources", "nyc", "--output", str(tmp_path / "m"), "--seed", str(2**32)])
    assert "argument --seed: must be in [0, 4294967295]" in capsys.readouterr().err
    # the sources, the checkpoint folder and the data folder: as the demo checks them, before any data
    model = str(tmp_path / "m")
    for extra, message in [(["--sources", "nyc,nyc"], "--sources: Source cities listed more than once: ['nyc']"),
                           (["--sources", ","], "--sources: No source city"),
                           (["--sources", "nyc", "--checkpoint-dir", str(tmp_path / "afile")],
                            "--checkpoint-dir " + str(tmp_path / "afile") + " is a file: give a folder"),
                           (["--sources", "nyc", "--data-home", str(tmp_path / "none")],
                            f"data folder {tmp_path / 'none'} (from --data-home) does not exist"),
                           (["--sources", "nyc", "--data-home", str(tmp_path / "afile")],
                            "(from --data-home) is a file, not a folder")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["pretrain", "--output", model, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, extra
