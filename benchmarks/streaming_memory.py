"""Peak memory of a streamed pre-training run as the data grows: it stays flat.

For each size, a fresh process builds a synthetic data set of gridded cities (as YJMob100K:
x/y cells (here of a 20 x 20 grid), day index and half-hour slot, 100 visits per user over 75 days,
users moving between a few anchor cells of their own and random cells), chunk by chunk,
and runs the whole streamed pipeline on it:

1. :class:`trajmoe.streaming.ChunkedEncoder` over the chunks (pass 1),
2. :func:`trajmoe.streaming.write_windows` to Parquet (pass 2),
3. one epoch of :func:`trajmoe.scale.pretrain` over every stored window,

and reports its peak resident memory (``ru_maxrss``), the store's size on disk and the time of
each step. The chunks are generated anew from their seed whenever they are iterated, so nothing
holds the whole data set; the largest default size (1.5 M visits) is 13 times the largest real
data set in ``shared/data`` (Foursquare NYC, 113 k check-ins).

Run ``python benchmarks/streaming_memory.py --output benchmarks/results/streaming_memory.json``
(about 20 minutes on 2 CPU cores; ``--sizes`` in visits, ``--in-memory`` to also measure ``fit``
on the whole frame, whose memory grows).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

VISITS_PER_USER = 100
USERS_PER_CHUNK = 2_000
N_CITIES = 4
DAYS = 75
#: Side of a synthetic city's grid in cells (20 x 20 = 400 candidate cells of 500 m: the step cost grows with it,
#: so does the memory of a batch, the memory of the data does not).
GRID = 20


class SyntheticChunks:
    """Chunks of ``USERS_PER_CHUNK`` users of synthetic gridded cities, made anew from their
    seed on every iteration (re-iterable, never all in memory)."""

    def __init__(self, n_visits, seed=0):
        self.n_users = max(n_visits // VISITS_PER_USER, 1)
        self.seed = seed

    def __iter__(self):
        for start in range(0, self.n_users, USERS_PER_CHUNK):
            yield self._chunk(start, min(start + USERS_PER_CHUNK, self.n_users))

    def _chunk(self, start, stop):
        rng = np.random.default_rng([self.seed, start])
        users = np.arange(start, stop)
        n = len(users) * VISITS_PER_USER
        user = np.repeat(users, VISITS_PER_USER)
        anchors = rng.integers(1, GRID + 1, size=(len(users), 4, 2))
        which = rng.integers(0, 4, size=n)
        cell = anchors[user - start, which]
        wander = rng.random(n) < 0.3
        cell[wander] = np.clip(cell[wander] + rng.integers(-5, 6, size=(wander.sum(), 2)), 1, GRID)
        day = np.sort(rng.integers(0, DAYS, size=(len(users), VISITS_PER_USER)), axis=1).ravel()
        return pd.DataFrame({"user_id": user, "day": day, "slot": rng.integers(0, 48, size=n),
                             "x": cell[:, 0], "y": cell[:, 1], "city": [f"synthetic_{c}" for c in user % N_CITIES]})


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: Windows per Parquet row group: what memory holds of the data is ``open_groups`` (4) of them (the
#: library's default is 65,536; smaller here, so that the smallest size already fills whole groups).
ROWS_PER_GROUP = 8_192


def run_one(n_visits, in_memory=False):
    """The pipeline at one size, in this process; returns its measurements."""
    import torch

    from trajmoe import SpatialSemanticEncoder, TrajMoERegressor
    from trajmoe.scale import pretrain
    from trajmoe.streaming import WindowStore, write_windows

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    params = dict(encoder=SpatialSemanticEncoder(), d_model=16, n_layers=1, n_heads=2, max_epochs=1,
                  batch_size=1024, validation_fraction=0.0, device="cpu", random_state=0)
    chunks = SyntheticChunks(n_visits)
    out = {"visits": chunks.n_users * VISITS_PER_USER, "users": chunks.n_users, "mode": "streamed"}
    start = time.perf_counter()
    if in_memory:
        out["mode"] = "in-memory fit"
        TrajMoERegressor(**params).fit(pd.concat(list(chunks), ignore_index=True))
        out["train_s"] = round(time.perf_counter() - start, 1)
    else:
        with tempfile.TemporaryDirectory() as folder:
            store = write_windows(TrajMoERegressor(**params), chunks, folder, rows_per_group=ROWS_PER_GROUP)
            out["write_s"] = round(time.perf_counter() - start, 1)
            out["windows"] = int(sum(store.meta["windows"]["train"]))
            out["disk_mb"] = round(sum(f.stat().st_size for f in Path(folder).rglob("*.parquet")) / 2**20, 1)
            start = time.perf_counter()
            model = pretrain(TrajMoERegressor(**params), WindowStore(folder))
            out["train_s"] = round(time.perf_counter() - start, 1)
            out["tokens"] = int(sum(store.meta["tokens"]["train"]))
            out["train_loss"] = round(float(model.history_["train_loss"].iloc[-1]), 4)
    out["peak_rss_mb"] = round(_peak_mb(), 1)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="150000,600000,1500000", help="comma-separated numbers of visits")
    parser.add_argument("--in-memory", action="store_true", help="also measure fit on the whole frame")
    parser.add_argument("--output", default=None, help="write the rows as JSON here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # child process
    parser.add_argument("--mode-in-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.mode_in_memory)))
        return 0
    rows = []
    modes = [False, True] if args.in_memory else [False]
    for in_memory in modes:
        for size in (int(s) for s in args.sizes.split(",")):
            cmd = [sys.executable, __file__, "--one", str(size)] + (["--mode-in-memory"] if in_memory else [])
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rows.append(row)
            print(row, flush=True)
    frame = pd.DataFrame(rows)
    print("\npeak memory by data size (one process each):")
    print(frame.to_string(index=False))
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
