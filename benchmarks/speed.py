"""Inference speed and peak memory of scoring, before and after bounded-memory scoring (issue 11).

Every figure is measured in ONE run of this script, on the same machine, so that the printed
ratios hold even when the machine's speed drifts:

- ``baselines``: targets per second of the counting baselines on YJMob100K city A (the top 10 of
  every visit, then the rank of every target), by the old dense path
  (:func:`trajmoe.estimators._scoring.dense_reference`: a (tokens x cells) float64 matrix per
  batch, a stable argsort per token, two passes) and by the estimators' own path; and whether
  both give the same top 10 and ranks.
- ``neural``: the same for a small TrajMoE network (trained one epoch) on Foursquare NYC and
  YJMob100K city A, the old path being the dense copy/history scoring in unsorted batches with the
  distance buckets of every (token, cell) pair found by a search over the edges.
- ``memory``: peak resident memory of ``predict_topk`` and ``target_ranks`` of a TrajMoE network
  on a synthetic city of 1,000, 10,000 and 100,000 cells (one fresh process per figure), new path
  and, up to 10,000 cells, the old one (at 100,000 cells it needs about 20 GB).

Usage::

    TRAJMOE_DATA=/path/to/shared/data python benchmarks/speed.py [baselines|neural|memory|all]

Times are wall-clock seconds of this process (quote the ratios: a shared machine is noisy).
"""

from __future__ import annotations

import argparse
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import trajmoe
import trajmoe.estimators._neural as neural
import trajmoe.nn.loss as loss
from trajmoe.nn.retrieval import DISTANCE_EDGES, N_DISTANCE_BUCKETS
from trajmoe.cli import load_city

warnings.filterwarnings("ignore")

#: The peak memory the issue allows for scoring a 100,000-cell city.
MEMORY_BOUND_GB = 2.0


def users_slice(visits, start, stop):
    users = visits["user_id"].unique()
    return visits[visits["user_id"].isin(users[start:stop])]


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def new_path(model, X, k=10):
    labels, values = model.predict_topk(X, k)
    return labels, values, model.target_table(X)


def bucketize_distance_buckets(current, metres):
    """The distance buckets of the first releases: Euclidean distances of every (token, cell) pair,
    then a search over the edges (:func:`trajmoe.nn.retrieval.distance_buckets` gives the same
    buckets from the squared distances of each distinct current cell)."""
    n_cells = metres.shape[0] - 1
    d = torch.cdist(metres[current], metres[:n_cells], compute_mode="donot_use_mm_for_euclid_dist")
    buckets = torch.bucketize(d, torch.tensor(DISTANCE_EDGES, dtype=d.dtype, device=d.device))
    return buckets.masked_fill_((current >= n_cells).unsqueeze(-1), N_DISTANCE_BUCKETS - 1)


def compare(name, model, X, old_scoring=None):
    """Time the old and the new path on X, print targets/s, the ratio and whether they agree."""
    from trajmoe.estimators._scoring import dense_reference
    first = X[X["user_id"] == X["user_id"].iloc[0]]         # warm-up: one-time costs out of the timings
    new_path(model, first)
    if old_scoring is not None:
        saved = neural.location_log_probs, loss.distance_buckets
        neural.location_log_probs, loss.distance_buckets = old_scoring, bucketize_distance_buckets
    try:
        (old_labels, _, old_table), old_s = timed(lambda: dense_reference(model, X, 10))
    finally:
        if old_scoring is not None:
            neural.location_log_probs, loss.distance_buckets = saved
    (labels, _, table), new_s = timed(lambda: new_path(model, X))
    report, one_s = timed(lambda: model.predict_and_evaluate(X, k=10))
    n = len(table)
    same = bool((labels == old_labels).all() and table["rank"].equals(old_table["rank"]))
    print(f"{name:<34} {n:>6} targets  old {n / old_s:>8.0f}/s  new {n / new_s:>8.0f}/s  "
          f"one pass {n / one_s:>8.0f}/s  speed-up {old_s / new_s:>5.1f}x ({old_s / one_s:>5.1f}x)  "
          f"same top-10 and ranks: {same}", flush=True)
    return old_s / new_s


def bench_baselines(args):
    visits, _ = load_city("yjmob_A")
    train, test = users_slice(visits, 0, 800), users_slice(visits, 800, 800 + args.users)
    print(f"counting baselines, YJMob100K city A ({args.users} test users), top 10 + ranks:")
    models = {
        "PopularityBaseline": trajmoe.PopularityBaseline(),
        "MarkovBaseline": trajmoe.MarkovBaseline(),
        "HistoryFrequencyBaseline": trajmoe.HistoryFrequencyBaseline(),
        # the parameters fitted on validation users (see the class docstrings)
        "GravityBaseline": trajmoe.GravityBaseline(beta=1.9, offset=100.0),
        "HistoryGravityBaseline (mixture)": trajmoe.HistoryGravityBaseline(
            beta=3.5, offset=2000.0, history_weight=0.44, popularity_weight=0.0, recency_weight=4.4),
    }
    for name, model in models.items():
        compare(name, model.fit(train), test)


def bench_neural(args):
    from trajmoe.nn.loss import dense_location_log_probs
    torch.manual_seed(0)
    for city in ("nyc", "yjmob_A"):
        visits, pois = load_city(city)
        train, test = users_slice(visits, 0, 60), users_slice(visits, 200, 200 + args.users)
        for copy_path in (False, True):
            model = trajmoe.TrajMoERegressor(max_epochs=1, random_state=0, copy_path=copy_path, device="cpu")
            model.fit(train, pois=pois)
            compare(f"TrajMoE small {city}{' copy path' if copy_path else ''}", model, test,
                    old_scoring=dense_location_log_probs)


def synthetic_city(n_cells, n_users=30, stays=40, seed=0):
    """Visits of ``n_users`` users and one POI in every cell of a grid of ``n_cells`` cells."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_cells)))
    cells = np.arange(n_cells)
    pois = pd.DataFrame({"x": cells % side, "y": cells // side, "category": "restaurant", "count": 1})
    home = rng.integers(0, n_cells, n_users)
    rows = []
    for u in range(2 * n_users):
        near = (home[u % n_users] + rng.integers(-3, 4, stays) * (1 + side * rng.integers(0, 2, stays))) % n_cells
        rows.append(pd.DataFrame({"user_id": u, "day": np.arange(stays) // 8, "slot": (np.arange(stays) % 8) * 6,
                                  "x": near % side, "y": near // side}))
    visits = pd.concat(rows, ignore_index=True)
    return visits[visits["user_id"] < n_users], visits[visits["user_id"] >= n_users], pois


def peak_gb():
    """Peak resident memory of this process in GB: the high-water mark of its address space
    (``VmHWM``, which starts afresh at ``exec``), else ``ru_maxrss`` (which on Linux keeps the
    peak of the parent a child was forked from).

    Returns
    -------
    float
        GB (2**30 bytes).
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def memory_child(n_cells, path, model_file, n_test_users=30):
    """``path == "fit"``: fit a small network on a synthetic city and pickle it to
    ``model_file``; else load it, score ``n_test_users`` test users (old or new path) and print
    the number of cells, the peak memory before and after scoring (GB), the seconds scoring took
    and the number of targets scored."""
    train, test, pois = synthetic_city(n_cells, n_users=30 if path == "fit" else n_test_users)
    if path == "fit":
        model = trajmoe.TrajMoERegressor(preset="small", max_epochs=1, batch_size=8, random_state=0,
                                         device="cpu", min_stays=1)
        with open(model_file, "wb") as f:
            pickle.dump(model.fit(train, pois=pois), f)
        return
    with open(model_file, "rb") as f:
        model = pickle.load(f)
    n = model.encoder_.cities_["city"].n_locations
    before = peak_gb()
    if path == "old":
        # the dense path of the first releases (imported here: this module's fast path also runs
        # on releases without it, see benchmarks/throughput.py --compare)
        from trajmoe.estimators._scoring import dense_reference
        from trajmoe.nn.loss import dense_location_log_probs
        neural.location_log_probs = dense_location_log_probs
        (_, _, table), seconds = timed(lambda: dense_reference(model, test, 10))
    else:
        (_, _, table), seconds = timed(lambda: new_path(model, test))
    peak = peak_gb()
    print(f"{n} {before:.3f} {peak:.3f} {seconds:.2f} {len(table)}")


def bench_memory(args):
    print("peak resident memory of a process scoring predict_topk + target_ranks, TrajMoE small, "
          "synthetic city (GB; 'loaded': the process before scoring, model and data loaded):")
    print(f"{'cells':>8} {'path':>4} {'loaded':>7} {'peak':>7} {'scoring':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for n_cells in (1_000, 10_000, 100_000):
            model_file = str(Path(folder) / f"model{n_cells}.pkl")
            subprocess.run([sys.executable, __file__, "memory-child", str(n_cells), "fit", model_file], check=True,
                           capture_output=True)
            for path in ("old", "new"):
                if path == "old" and n_cells > 10_000:
                    print(f"{n_cells:>8} {'old':>4}  (not run: the dense path needs about 20 GB)")
                    continue
                out = subprocess.run([sys.executable, __file__, "memory-child", str(n_cells), path, model_file],
                                     capture_output=True, text=True, check=True).stdout.split()
                n, before, peak, seconds = int(out[0]), *map(float, out[1:4])
                verdict = f"  within {MEMORY_BOUND_GB:.0f} GB: {peak <= MEMORY_BOUND_GB}" if n_cells == 100_000 else ""
                print(f"{n:>8} {path:>4} {before:>7.2f} {peak:>7.2f} {peak - before:>8.2f} {seconds:>8.1f}{verdict}",
                      flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=["baselines", "neural", "memory", "all"])
    parser.add_argument("--users", type=int, default=30, help="test users (default 30)")
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "memory-child":
        memory_child(int(sys.argv[2]), sys.argv[3], sys.argv[4], *map(int, sys.argv[5:6]))
        return
    args = parser.parse_args(argv)
    print(f"trajmoe {trajmoe.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, bench in (("baselines", bench_baselines), ("neural", bench_neural), ("memory", bench_memory)):
        if args.what in (name, "all"):
            bench(args)


if __name__ == "__main__":
    main()
