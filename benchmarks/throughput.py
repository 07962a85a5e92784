"""Training and inference throughput against the machine's peak, in one run (issue 11).

Every figure is measured in ONE run of this script, and rates are also given as ratios to a
matrix-multiply peak measured in the same process, so that they hold on a shared, noisy machine:

- ``peak``: the best fp32 (and, where the hardware has bf16 arithmetic, bf16) matmul rate of
  this process, in GFLOP/s (square products of 256 to 2048, best of a few repeats).
- ``train``: training steps (forward, loss, backward, gradient clipping, AdamW step: the steps of
  ``TrajMoERegressor.fit``) on Foursquare NYC batches of 64 windows, at the small preset
  (d = 64, 2 layers) and at d = 256, 4 layers (4 heads): valid tokens per second and the model
  FLOP utilisation (MFU), the model FLOPs of the valid tokens per second over the fp32 peak.
- ``infer``: ``predict`` targets per second of a small network on NYC and YJMob100K city A
  (30 test users; the median of :data:`PREDICT_REPEATS` calls, and the first call after fit, which
  also computes the city's candidate matrix that later calls reuse) and target-cell scores per second
  (targets x the vocabulary's cells: a revision with another vocabulary scores another number of
  cells per target), and on a synthetic city of 1,000, 10,000 and 100,000 cells (``predict_topk``
  and ``target_table``, one fresh process per figure, as ``benchmarks/speed.py memory``): targets
  per second and peak resident memory.
- ``scaling``: the cost exponents, slopes of log(scoring seconds) against log(visits) (30 to 240
  test users of the 10,000-cell city) and against log(cells) (the 10,000 and 100,000-cell cities
  of ``infer``); both are 1 when scoring does a constant amount of work per (target, cell).

Model FLOPs (matrix products only, 2 FLOPs per multiply-add; element-wise work, normalisation and
softmax are not counted, and padding tokens are not counted: work on them is waste), per valid
token of a window, with d the width, n_l the layers, c the token's causal context (its position
+ 1), N the city's cells, P = 34 POI features, T = 96 gap classes, K the distance buckets,
S = 4 streams and one expert FFN (d -> 4d -> d) per stream::

    forward = n_l [S (8 d^2 + 4 c d + 16 d^2) + 26 d]     (attention projections, scores and
                                                          values, expert FFNs, router and gating)
            + 2 P d + 4 d                                 (input embeddings)
            + 2 d^2 + 2 d T + 2 d (2 + K)                 (query, time head, prior gates)
            + 2 d N                                       (scores of every candidate cell)
            + [copy path: 2 d^2 + 2 d + 2 c d]                 (copy keys, gate, scores)
            + N (16 d^2 + 4 d^2 + 6 d + P d / 2) / (valid tokens of the batch)     (location tower)
    training = 3 x forward                                (backward: twice the forward)

The forward formula equals what :class:`torch.utils.flop_counter.FlopCounterMode` counts, plus
the attention kernel and matrix-vector products it leaves out (tests/test_throughput.py). A run
also counts one training step with it (forward and backward, padding included, attention left
out) and prints the ratio to the training formula.

``--compare REV`` runs the same sections of this script against git revision REV (``git archive
REV`` extracted in a temporary folder and put first on ``PYTHONPATH``; nothing of the working tree
changes) and then against the working tree, and prints both and the ratios side by side;
``--rounds R`` alternates the two R times and prints the medians, with the lowest and highest
ratio of a round (on a shared machine, where one run of a fraction of a second a call can fall on
a slow spell).
``--device cuda`` runs the training and the real-city inference on the GPU under bf16 autocast
(peaks: fp32 without TF32, and bf16; ``infer`` also gives the GPU memory peak of ``predict``, and
its synthetic cities stay on the CPU); ``--bf16-train`` runs the training steps under bf16 autocast
on a CPU too (the MFU stays a ratio to the fp32 peak; the library itself trains in float32)::

    TRAJMOE_DATA=/path/to/data python benchmarks/throughput.py [peak|train|infer|scaling|all]
    TRAJMOE_DATA=/path/to/data python benchmarks/throughput.py train --compare HEAD
    TRAJMOE_DATA=/path/to/data python benchmarks/throughput.py train infer --device cuda

Set ``OMP_NUM_THREADS`` (this script uses the threads torch starts with); quote the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import speed  # noqa: E402  (benchmarks/speed.py: data slices, timers, the synthetic city)

import trajmoe  # noqa: E402
from trajmoe.cli import load_city  # noqa: E402

warnings.filterwarnings("ignore")

SECTIONS = ("peak", "train", "infer", "scaling")
#: ``predict`` calls timed per real city in ``infer`` (their median is reported).
PREDICT_REPEATS = 5
#: Training configurations: name -> estimator parameters.
CONFIGS = {"small": dict(preset="small"), "d256": dict(preset="small", d_model=256, n_layers=4, n_heads=4)}
#: Cells of the synthetic cities of ``infer``.
CELLS = (1_000, 10_000, 100_000)
#: Test users of the visit scaling (10,000-cell synthetic city).
USERS = (30, 60, 120, 240)
#: POI features of the shared taxonomy and gap classes (the formula's P and T).
N_POI, N_GAPS = 34, 96


def has_bf16(device):
    """Whether ``device`` computes bf16 products natively (CPU: AVX512-BF16 or AMX; CUDA: sm80+).

    Parameters
    ----------
    device : {"cpu", "cuda"}

    Returns
    -------
    bool
    """
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(device, bf16=False):
    """bf16 autocast on a GPU; on a CPU only when asked (``--bf16-train``): the library trains and
    predicts in float32, and on CPUs without bf16 arithmetic bf16 products are slower.

    Parameters
    ----------
    device : {"cpu", "cuda"}
    bf16 : bool, default False
        Autocast on a CPU too.

    Returns
    -------
    context manager
    """
    if device == "cuda" or bf16:
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device):
    """Wait for the GPU's queued work (nothing on a CPU), so that wall-clock timings are complete.

    Parameters
    ----------
    device : {"cpu", "cuda"}
    """
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, sizes=None, repeats=5):
    """Best rate of square ``n x n`` products of ``dtype`` on ``device``.

    Parameters
    ----------
    device : {"cpu", "cuda"}
    dtype : torch.dtype
        ``torch.float32`` (on a GPU without TF32) or ``torch.bfloat16``.
    sizes : sequence of int, optional
        Sides n tried; default 256 to 2048 on a CPU, 2048 to 8192 on a GPU.
    repeats : int, default 5
        Timings per size (the best counts).

    Returns
    -------
    float
        GFLOP/s, 2 n^3 FLOPs per product.
    """
    sizes = sizes or ((2048, 4096, 8192) if device == "cuda" else (256, 512, 1024, 2048))
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        calls = max(1, int(2e9 / (2 * n ** 3)))        # ~1 GFLOP per timing at least
        a @ b
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                a @ b
            synchronize(device)
            best = max(best, calls * 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def bench_peak(args, label=""):
    """fp32 (and bf16, where native) matmul peaks of this process, printed.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line (``device``).
    label : str, default ""
        Printed after "matmul peak".

    Returns
    -------
    dict
        ``fp32_gflops`` and, where native, ``bf16_gflops`` (float, GFLOP/s).
    """
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    out = {"fp32_gflops": matmul_peak(args.device, torch.float32)}
    if has_bf16(args.device):
        out["bf16_gflops"] = matmul_peak(args.device, torch.bfloat16)
    print(f"matmul peak{label}: fp32 {out['fp32_gflops']:.1f} GFLOP/s"
          + (f", bf16 {out['bf16_gflops']:.1f} GFLOP/s" if "bf16_gflops" in out else ", no native bf16"), flush=True)
    return out


def model_flops(module, location, n_cells, n_tower_rows=None):
    """Forward model FLOPs of the valid tokens of one batch (the formula of the module docstring).

    Parameters
    ----------
    module : SAMoETransformer
    location : LongTensor of shape (B, L)
        The batch's location ids (-1 = PAD, trailing).
    n_cells : int
        Candidate cells N of the batch's city.
    n_tower_rows : int, optional
        Rows the location tower encodes for the batch (default N).

    Returns
    -------
    float
        FLOPs of one forward pass over the batch's valid tokens.
    """
    d = module.d_model
    n_layers = len(module.blocks)
    valid = (location >= 0).cpu()
    context = (torch.arange(1, location.shape[1] + 1)[None, :] * valid).sum().item()    # sum of c
    tokens = valid.sum().item()
    n_buckets = 0 if module.distance_bias is None else module.distance_bias.numel()
    per_token = (n_layers * (4 * 24 * d * d + 26 * d) + 2 * N_POI * d + 4 * d
                 + 2 * d * d + 2 * d * N_GAPS + 2 * d * (2 + n_buckets) + 2 * d * n_cells)
    flops = tokens * per_token + n_layers * 4 * 4 * d * context
    if module.copy_key is not None:
        flops += tokens * (2 * d * d + 2 * d) + 2 * d * context
    rows = n_cells if n_tower_rows is None else n_tower_rows
    flops += rows * (20 * d * d + 6 * d + N_POI * d / 2)
    return float(flops)


def training_setup(args, config, visits, pois):
    """An untrained network of ``config`` and the first batches of an epoch of its training windows.

    Built as ``TrajMoERegressor.fit`` builds them (encoder, sliding windows, skorch net with its
    criterion and AdamW optimizer, the city tables registered), without training.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line (``batch_size``, ``steps``, ``device``, ``estimator``).
    config : str
        Key of :data:`CONFIGS`.
    visits, pois : DataFrame
        Canonical visit and POI frames of one city.

    Returns
    -------
    model : TrajMoERegressor
        With ``net_`` initialised (``module_``, ``criterion_``, ``optimizer_``).
    batches : list of (dict, dict)
        ``args.steps + 1`` batches ``(X, y)`` of LongTensors [B, L] (and ``city`` [B]) on the device.
    """
    from trajmoe.nn.data import CityBatchLoader, WindowDataset
    model = trajmoe.TrajMoERegressor(**CONFIGS[config], batch_size=args.batch_size, max_epochs=1,
                                     random_state=0, device=args.device, **args.estimator)
    X = model._fit_encoder(visits, pois, partial=False)
    train, _ = model._training_windows(X, holdout=False)
    model.net_ = model._new_net(None)
    model.net_.initialize()
    model._register_cities()
    loader = CityBatchLoader(WindowDataset(train), batch_size=args.batch_size, shuffle=True, random_state=0)
    batches = []
    for X_batch, y_batch in loader:
        batches.append(({k: v.to(args.device) for k, v in X_batch.items()},
                        {k: v.to(args.device) for k, v in y_batch.items()}))
        if len(batches) == args.steps + 1:
            break
    return model, batches


def bench_train(args, peak, peak_after):
    """Time training steps of every configuration of :data:`CONFIGS` and print their rates.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line.
    peak : dict
        Of :func:`bench_peak`, measured before.
    peak_after : dict
        Receives the peaks measured again after the steps.

    Returns
    -------
    dict
        Per configuration: ``tokens_per_s`` (valid tokens), ``model_gflops`` (formula FLOPs per
        second / 1e9), ``mfu_fp32`` (and ``mfu_bf16``), ``pad_share``, ``counted_over_formula``,
        ``d_model``, ``n_layers``, ``n_cells``.
    """
    visits, pois = load_city(args.city)
    visits = speed.users_slice(visits, 0, 200)
    out = {}
    print(f"training, {args.city} (200 users), batches of {args.batch_size} windows, {args.steps} steps after one "
          f"warm-up step{' (bf16 autocast)' if args.device == 'cuda' or args.bf16_train else ''}:", flush=True)
    for config in CONFIGS:
        torch.manual_seed(0)
        model, batches = training_setup(args, config, visits, pois)
        net = model.net_
        module, criterion, optimizer = net.module_, net.criterion_, net.optimizer_
        module.train()
        n_cells = module.n_locations(0)

        def step(X, y):
            optimizer.zero_grad(set_to_none=True)
            with autocast(args.device, args.bf16_train):
                loss = criterion(module(**X), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), model.clip_grad)
            optimizer.step()
            return loss

        step(*batches[0])                       # warm-up: allocations, lazy initialisation
        try:
            from torch.utils.flop_counter import FlopCounterMode
            counter = FlopCounterMode(display=False)
            with counter:
                step(*batches[0])
            counted = counter.get_total_flops()
        except Exception:                       # noqa: BLE001  (an older torch: no count)
            counted = float("nan")
        formula_first = 3 * model_flops(module, batches[0][0]["location"], n_cells)
        tokens = flops = 0.0
        synchronize(args.device)
        start = time.perf_counter()
        for X, y in batches[1:]:
            step(X, y)
            tokens += float((X["location"] >= 0).sum())
            flops += 3 * model_flops(module, X["location"], n_cells)
        synchronize(args.device)
        seconds = time.perf_counter() - start
        padded = sum(X["location"].numel() for X, _ in batches[1:])
        row = {"tokens_per_s": tokens / seconds, "model_gflops": flops / seconds / 1e9,
               "mfu_fp32": flops / seconds / 1e9 / peak["fp32_gflops"], "pad_share": 1 - tokens / padded,
               "counted_over_formula": counted / formula_first, "d_model": module.d_model,
               "n_layers": len(module.blocks), "n_cells": n_cells}
        if "bf16_gflops" in peak:
            row["mfu_bf16"] = flops / seconds / 1e9 / peak["bf16_gflops"]
        out[config] = row
        print(f"  {config:<6} d={row['d_model']:<4} layers={row['n_layers']}  {row['tokens_per_s']:>8.0f} tokens/s  "
              f"{row['model_gflops']:>6.2f} GFLOP/s  MFU {100 * row['mfu_fp32']:5.1f} % of fp32 peak"
              + (f" ({100 * row['mfu_bf16']:.1f} % of bf16)" if "mfu_bf16" in row else "")
              + f"  padding {100 * row['pad_share']:.0f} %  FlopCounter/formula {row['counted_over_formula']:.2f}",
              flush=True)
    peak_after.update(bench_peak(args, " again"))
    return out


def child(*argv, capture=True):
    """Run ``benchmarks/speed.py`` in a fresh process.

    Parameters
    ----------
    *argv
        Its command line (converted to str).
    capture : bool, default True
        Return the fields of its last printed line (else None).

    Returns
    -------
    list of str or None
    """
    out = subprocess.run([sys.executable, str(HERE / "speed.py"), *map(str, argv)], check=True,
                         capture_output=True, text=True).stdout
    return out.split("\n")[-2].split() if capture else None


def bench_infer(args, folder):
    """Inference targets per second on real cities and on synthetic cities of ``args.cells`` cells.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line (``device``, ``cells``, ``estimator``).
    folder : str or Path
        Where the synthetic cities' models are pickled.

    Returns
    -------
    dict
        ``cities``: per city ``targets_per_s`` (median of :data:`PREDICT_REPEATS` calls),
        ``first_call_targets_per_s`` (the first call after fit, which also computes what later
        calls reuse), ``cells`` (the fitted vocabulary) and
        ``mscores_per_s`` (targets x cells per second, millions; with ``--device cuda`` also
        ``gpu_peak_gb``, the GPU memory peak of ``predict``, GB); ``synthetic``: per nominal size
        ``cells`` (the vocabulary's), ``targets_per_s``, ``peak_gb`` (peak resident memory, GB),
        ``seconds``.
    """
    out = {"cities": {}, "synthetic": {}}
    print("inference, predict, TrajMoE small (one epoch on 60 users), 30 test users:", flush=True)
    for city in ("nyc", "yjmob_A"):
        torch.manual_seed(0)
        visits, pois = load_city(city)
        train, test = speed.users_slice(visits, 0, 60), speed.users_slice(visits, 200, 230)
        model = trajmoe.TrajMoERegressor(max_epochs=1, random_state=0, device=args.device, **args.estimator)
        model.fit(train, pois=pois)
        with autocast(args.device):
            n_targets = len(model.target_table(test))
            # the first call after fit: it also computes what later calls reuse (the city's candidate
            # matrix and tiles, kept across calls since they depend on the network alone)
            model = pickle.loads(pickle.dumps(model))               # nothing kept from target_table
            first = speed.timed(lambda: model.predict(test))[1]
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            # the median of a few calls: one call of a fraction of a second is at the machine's mercy
            seconds = float(np.median([speed.timed(lambda: model.predict(test))[1] for _ in range(PREDICT_REPEATS)]))
        # a revision with another vocabulary scores another number of cells per target: the scores
        # per second compare the work per cell
        n_cells = model.encoder_.cities_[train["city"].iloc[0]].n_locations
        out["cities"][city] = {"targets_per_s": n_targets / seconds, "cells": n_cells,
                               "mscores_per_s": n_targets * n_cells / seconds / 1e6,
                               "first_call_targets_per_s": n_targets / first}
        if args.device == "cuda":
            out["cities"][city]["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        print(f"  {city:<8} {n_targets:>6} targets  {n_targets / seconds:>8.0f} targets/s  {n_cells:>6} cells  "
              f"{n_targets * n_cells / seconds / 1e6:>6.1f} M target-cell scores/s  "
              f"(first call after fit {n_targets / first:.0f} targets/s)"
              + (f"  GPU memory peak {out['cities'][city]['gpu_peak_gb']:.2f} GB" if args.device == "cuda" else ""),
              flush=True)
    print("inference, predict_topk + target_table, synthetic city (fresh process per figure):", flush=True)
    for n_cells in args.cells:
        model_file = Path(folder) / f"model{n_cells}.pkl"
        child("memory-child", n_cells, "fit", model_file, capture=False)
        n, before, peak, seconds, targets = child("memory-child", n_cells, "new", model_file)
        row = {"cells": int(n), "targets_per_s": int(targets) / float(seconds), "peak_gb": float(peak),
               "seconds": float(seconds)}
        out["synthetic"][str(n_cells)] = row
        print(f"  {row['cells']:>7} cells  {row['targets_per_s']:>8.0f} targets/s  peak {row['peak_gb']:.2f} GB"
              + (f"  within {speed.MEMORY_BOUND_GB:.0f} GB: {row['peak_gb'] <= speed.MEMORY_BOUND_GB}"
                 if n_cells == 100_000 else ""), flush=True)
    return out


def slope(x, y):
    """Least-squares slope of log(y) against log(x).

    Parameters
    ----------
    x, y : array-like of float > 0, shape (n,), n >= 2

    Returns
    -------
    float
    """
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def bench_scaling(args, folder, infer):
    """Cost exponents of scoring in visits (:data:`USERS` test users) and in cells.

    Parameters
    ----------
    args : argparse.Namespace
    folder : str or Path
        Where :func:`bench_infer` pickled the synthetic cities' models.
    infer : dict
        Of :func:`bench_infer` (the two largest synthetic cities give the exponent in cells).

    Returns
    -------
    dict
        ``visits_exponent`` (all sizes), ``visits_exponent_largest`` (the two largest),
        ``cells_exponent`` (float) and ``visits`` (targets -> seconds).
    """
    model_file = Path(folder) / "model10000.pkl"
    if not model_file.exists():
        child("memory-child", 10_000, "fit", model_file, capture=False)
    targets, seconds = [], []
    for users in USERS:
        fields = child("memory-child", 10_000, "new", model_file, users)
        seconds.append(float(fields[3]))
        targets.append(int(fields[4]))
    largest = [str(c) for c in sorted(args.cells)[-2:]]
    cells = [infer["synthetic"][c]["cells"] for c in largest]
    cell_seconds = [infer["synthetic"][c]["seconds"] for c in largest]
    cell_targets = [infer["synthetic"][c]["targets_per_s"] * infer["synthetic"][c]["seconds"] for c in largest]
    out = {"visits_exponent": slope(targets, seconds), "visits_exponent_largest": slope(targets[-2:], seconds[-2:]),
           "cells_exponent": slope(cells, np.divide(cell_seconds, cell_targets)),
           "visits": dict(zip(map(str, targets), seconds))}
    print(f"cost exponents: {out['visits_exponent']:.2f} in visits ({out['visits_exponent_largest']:.2f} between "
          f"the two largest; targets {targets}: seconds {[round(s, 2) for s in seconds]}), "
          f"{out['cells_exponent']:.2f} in cells "
          f"(seconds per target at {cells} cells)", flush=True)
    return out


def run(args):
    """Run the sections asked for in this process.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    dict
        Section name -> its results (``peak`` always).
    """
    print(f"trajmoe {trajmoe.__version__} ({Path(trajmoe.__file__).parent}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}", flush=True)
    results = {"peak": bench_peak(args)}
    with tempfile.TemporaryDirectory() as folder:
        if "train" in args.what:
            # the load of a shared machine drifts: the peak is the best of before and after training
            after = {}
            results["train"] = bench_train(args, results["peak"], after)
            results["peak"] = {k: max(v, after[k]) for k, v in results["peak"].items()}
            for row in results["train"].values():
                row["mfu_fp32"] = row["model_gflops"] / results["peak"]["fp32_gflops"]
                if "bf16_gflops" in results["peak"]:
                    row["mfu_bf16"] = row["model_gflops"] / results["peak"]["bf16_gflops"]
            print("MFU against the best peak of the run: " + ", ".join(
                f"{name} {100 * row['mfu_fp32']:.1f} % of fp32" for name, row in results["train"].items()), flush=True)
        if "infer" in args.what or "scaling" in args.what:
            results["infer"] = bench_infer(args, folder)
        if "scaling" in args.what:
            results["scaling"] = bench_scaling(args, folder, results["infer"])
    return results


def flatten(tree, prefix=""):
    """Leaves of nested dicts as ``{"a/b/c": value}``.

    Parameters
    ----------
    tree : dict
    prefix : str, default ""

    Returns
    -------
    dict
    """
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare(args, argv):
    """Run this script on revision ``args.compare`` and on the working tree; print side by side.

    With ``--rounds R`` the two alternate R times (REV, tree, REV, tree, ...), so that a slow
    spell of a shared machine falls on both; every figure is then the median over the rounds, and
    the ratio of the medians comes with the lowest and highest ratio of a round.

    Parameters
    ----------
    args : argparse.Namespace
    argv : list of str
        The command line (``--compare REV`` and ``--rounds R`` are dropped from what the runs get).
    """
    repo = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=HERE, capture_output=True,
                               text=True, check=True).stdout.strip())
    own = ("--compare", "--rounds")
    rest = [a for i, a in enumerate(argv)
            if not a.startswith(own) and (i == 0 or argv[i - 1] not in own)]
    results = {args.compare: [], "working tree": []}
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "rev.tar"
        subprocess.run(["git", "archive", "-o", str(archive), args.compare], cwd=repo, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(Path(folder) / "rev")
        for round_ in range(args.rounds):
            for label, root in ((args.compare, Path(folder) / "rev"), ("working tree", repo)):
                env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
                out_file = Path(folder) / "result.json"
                which = f", round {round_ + 1} of {args.rounds}" if args.rounds > 1 else ""
                print(f"--- {label}{which}", flush=True)
                subprocess.run([sys.executable, __file__, *rest, "--json", str(out_file)], env=env, check=True)
                results[label].append(flatten(json.loads(out_file.read_text())))
    old, new = results[args.compare], results["working tree"]
    rounds = f"; medians of {args.rounds} rounds, and the lowest - highest ratio of a round" if args.rounds > 1 else ""
    print(f"\nside by side ({args.compare} -> working tree; ratio new / old{rounds}):")
    for key in old[0]:
        pairs = [(a[key], b[key]) for a, b in zip(old, new) if key in b]
        if len(pairs) != args.rounds or not all(isinstance(v, (int, float)) for pair in pairs for v in pair):
            continue
        a, b = float(np.median([p[0] for p in pairs])), float(np.median([p[1] for p in pairs]))
        line = f"  {key:<40} {a:>12.4g} {b:>12.4g}  x{b / a if a else math.nan:.2f}"
        if args.rounds > 1:
            ratios = [y / x if x else math.nan for x, y in pairs]
            line += f"  (x{min(ratios):.2f} - x{max(ratios):.2f})"
        print(line)


def main(argv=None):
    """Command line entry point (see the module docstring).

    Parameters
    ----------
    argv : list of str, optional
        Default ``sys.argv[1:]``.
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="*", help=f"sections among all, {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16-train", action="store_true",
                        help="train under bf16 autocast on a CPU too (a GPU always is); a revision before "
                             "this option fails under it")
    parser.add_argument("--city", default="yjmob_A", help="city of the training batches (default yjmob_A)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per configuration (default 4)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per training batch (default 64)")
    parser.add_argument("--cells", type=int, nargs="+", default=list(CELLS),
                        help="cells of the synthetic cities (default 1000 10000 100000; the scoring of "
                             "releases before bounded-memory scoring needs about 20 GB at 100000)")
    parser.add_argument("--compare", metavar="REV", help="also run on git revision REV and print ratios")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --compare: runs of each, alternating (default 1); medians and the range of ratios")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="extra TrajMoERegressor parameter (Python literal), e.g. compile=True")
    args = parser.parse_args(argv)
    unknown = set(args.what) - {"all", *SECTIONS}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose among all, {', '.join(SECTIONS)}")
    if not args.what or "all" in args.what:
        args.what = list(SECTIONS)
    import ast
    args.estimator = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.compare:
        compare(args, argv)
        return
    results = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
