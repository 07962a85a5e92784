"""Command line: ``trajmoe demo``, the cross-city transfer experiment on real data.

Pre-train TrajMoE on source cities, fine-tune it for one epoch on a random share of the
target city's training users, and compare it on the target's held-out test users with
the same model trained from scratch on all of the target's training users and with the
baselines: all models on the same split, scored by full ranking.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import pandas as pd

from . import datasets, metrics
from .baselines import (GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline, MarkovBaseline,
                        PopularityBaseline)
from .estimator import TrajMoERegressor
from .model_selection import train_test_users
from .schema import DataWarning

__all__ = ["main", "run_demo", "load_city", "CITY_LOADERS"]

#: City name -> (loader in :mod:`trajmoe.datasets`, its arguments); names as in the ``city`` column.
CITY_LOADERS = {
    "nyc": ("load_foursquare_nyc", ()),
    "singapore": ("load_foursquare_singapore", ()),
    "yjmob_A": ("load_yjmob100k", ("A",)),
    "edinburgh": ("load_flickr", ("Edinburgh",)),
    "melbourne": ("load_flickr", ("Melbourne",)),
    "osaka": ("load_flickr", ("Osaka",)),
    "toronto": ("load_flickr", ("Toronto",)),
    # Gowalla check-ins, one city per metro box (load_gowalla_ca; "gowalla_other" is no city)
    "gowalla_bay_area": ("load_gowalla_ca", ("bay_area",)),
    "gowalla_los_angeles": ("load_gowalla_ca", ("los_angeles",)),
    "gowalla_las_vegas": ("load_gowalla_ca", ("las_vegas",)),
    "gowalla_san_diego": ("load_gowalla_ca", ("san_diego",)),
    "gowalla_sacramento": ("load_gowalla_ca", ("sacramento",)),
}
DEFAULT_TARGET = "nyc"
#: Check-in and photo-trail cities (the dense GPS-like YJMob100K is slower and, measured on NYC
#: validation users, does not help check-in targets; add it with ``--sources``).
DEFAULT_SOURCES = ("singapore", "edinburgh", "melbourne", "osaka", "toronto")


def load_city(name, data_home=None):
    """Visits and POIs of one city of :data:`CITY_LOADERS`.

    Returns
    -------
    visits : DataFrame
        Canonical visit frame (``city`` = name).
    pois : DataFrame or None
        The city's POI frame (``city`` = name), or None when the loader has none.

    Raises
    ------
    ValueError
        If ``name`` is not a key of :data:`CITY_LOADERS`.
    """
    if name not in CITY_LOADERS:
        raise ValueError(f"Unknown city {name!r}; choose from {sorted(CITY_LOADERS)}.")
    loader, args = CITY_LOADERS[name]
    bunch = getattr(datasets, loader)(*args, data_home=data_home)
    pois = bunch.pois
    if pois is not None:
        pois = pois[pois["city"] == name]   # YJMob ships the POIs of cities B-D too
        pois = pois if len(pois) else None
    return bunch.visits, pois


def _concat(frames):
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def run_demo(target=DEFAULT_TARGET, sources=DEFAULT_SOURCES, fraction=0.05, seed=0, data_home=None,
             max_epochs=6, protocol="all", model_params=None, log=print):
    """Run the cross-city transfer experiment and return its results table.

    Parameters
    ----------
    target : str, default "nyc"
        Target city (a key of :data:`CITY_LOADERS`).
    sources : sequence of str
        Pre-training cities (the target is never among them).
    fraction : float, default 0.05
        Share of the target's training users used to fine-tune (sampled at random by users).
    seed : int, default 0
        Seeds the user split, the sample and the models.
    data_home : str or Path, optional
        Data folder (default: ``TRAJMOE_DATA``).
    max_epochs : int, default 6
        Pre-training epochs at most (early stopping on held-out source users).
    protocol : {"all", "last"}, default "all"
    model_params : dict, optional
        Extra :class:`TrajMoERegressor` parameters.
    log : callable, default print

    Returns
    -------
    dict
        ``{"target_city", "protocol", "fraction", "seed", "rows": [{"model", "acc@1", ...,
        "mrr", "ndcg@10", "n_targets", "fit_seconds"}]}``.

    Raises
    ------
    ValueError
        If the target is among the sources or a city is unknown.
    """
    if target in sources:
        raise ValueError(f"The target city {target!r} must not be a source city.")
    t0 = time.perf_counter()
    visits, pois = load_city(target, data_home)
    src = [load_city(s, data_home) for s in sources]
    src_visits = _concat([v for v, _ in src])
    src_pois = _concat([p for _, p in src])
    train_idx, val_idx, test_idx = train_test_users(visits, random_state=seed)
    target_train = visits.iloc[np.concatenate([train_idx, val_idx])]
    test = visits.iloc[test_idx]
    rng = np.random.default_rng(seed)
    users = target_train["user_id"].unique()
    few = rng.choice(users, size=max(1, int(round(fraction * len(users)))), replace=False)
    finetune = target_train[target_train["user_id"].isin(few)]
    log(f"target {target}: {visits['user_id'].nunique()} users, {len(visits)} visits; fine-tune on "
        f"{len(few)} users ({len(finetune)} visits), test on {test['user_id'].nunique()} users "
        f"({len(test)} visits); sources {list(sources)}: {len(src_visits)} visits "
        f"(loaded in {time.perf_counter() - t0:.0f} s)")

    params = dict(random_state=seed, max_epochs=max_epochs, verbose=1)
    params.update(model_params or {})
    rows = []

    def report(name, model, seconds):
        ranks = model.target_ranks(test, protocol=protocol).to_numpy()
        row = {"model": name, **metrics.ranking_report(ranks), "fit_seconds": round(seconds, 1)}
        if hasattr(model, "net_"):
            row["epochs"] = len(model.net_.history)
        rows.append(row)
        log(f"{name:22s} acc@1 {row['acc@1']:.3f}  acc@5 {row['acc@5']:.3f}  mrr {row['mrr']:.3f}  "
            f"({seconds:.0f} s)")

    start = time.perf_counter()
    log(f"pre-training TrajMoE on {len(sources)} source cities, then one epoch on {fraction:.0%} of {target}")
    finetuned = TrajMoERegressor(**params).fit(src_visits, pois=src_pois)
    finetuned.partial_fit(finetune, pois=pois)
    report("trajmoe_finetuned", finetuned, time.perf_counter() - start)

    start = time.perf_counter()
    log(f"training TrajMoE from scratch on 100 % of {target}'s training users")
    full = TrajMoERegressor(**params).fit(target_train, pois=pois)
    report("trajmoe_full_target", full, time.perf_counter() - start)

    for name, cls in (("history_frequency", HistoryFrequencyBaseline), ("history_gravity", HistoryGravityBaseline),
                      ("gravity", GravityBaseline), ("markov", MarkovBaseline), ("popularity", PopularityBaseline)):
        start = time.perf_counter()
        model = cls().fit(target_train, pois=pois)
        report(name, model, time.perf_counter() - start)
    return {"target_city": target, "protocol": protocol, "fraction": fraction, "seed": seed,
            "sources": list(sources), "rows": rows}


def format_table(result):
    """Plain-text table (model x metric) of :func:`run_demo`'s result."""
    frame = pd.DataFrame(result["rows"]).set_index("model")
    cols = ["acc@1", "acc@3", "acc@5", "acc@10", "mrr", "ndcg@10", "n_targets", "epochs", "fit_seconds"]
    frame = frame[[c for c in cols if c in frame]].astype(object)
    for col in ("n_targets", "epochs"):
        if col in frame:
            frame[col] = [("" if pd.isna(v) else str(int(v))) for v in frame[col]]
    for col in ("acc@1", "acc@3", "acc@5", "acc@10", "mrr", "ndcg@10"):
        if col in frame:
            frame[col] = [f"{v:.4f}" for v in frame[col]]
    frame["fit_seconds"] = [f"{v:.1f}" for v in frame["fit_seconds"]]
    return frame.to_string()


def main(argv=None):
    """Entry point of the ``trajmoe`` console script."""
    parser = argparse.ArgumentParser(prog="trajmoe", description="TrajMoE: next-location prediction in any city.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="cross-city transfer on real data: pre-train, fine-tune on a few users of a new city, "
             "compare with baselines",
        description="Pre-train TrajMoE on the source cities, fine-tune it for ONE epoch on a random "
                    "share of the target city's training users, train the same model from scratch on "
                    "all of them, and score both and the baselines on the target's test users.",
        epilog="example: TRAJMOE_DATA=../shared/data trajmoe demo --target nyc --output results.json")
    demo.add_argument("--target", default=DEFAULT_TARGET, choices=sorted(CITY_LOADERS), help="target city")
    demo.add_argument("--sources", default=",".join(DEFAULT_SOURCES), help="comma-separated source cities")
    demo.add_argument("--fraction", type=float, default=0.05, help="share of the target's training users")
    demo.add_argument("--seed", type=int, default=0, help="seed of the user split, the sample and the networks")
    demo.add_argument("--max-epochs", type=int, default=6,
                      help="training epochs at most, for pre-training and the from-scratch model")
    demo.add_argument("--protocol", choices=("all", "last"), default="all",
                      help="score every position of a window, or its last one")
    demo.add_argument("--data-home", default=None, help="data folder; unset: $TRAJMOE_DATA")
    demo.add_argument("--output", default=None, help="write the results as JSON to this file")
    args = parser.parse_args(argv)

    sources = tuple(s for s in args.sources.split(",") if s and s != args.target)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        # data notes as one line each, not as Python warnings pointing into this file
        warnings.showwarning = lambda message, category, *args, **kwargs: print(
            f"note: {message}" if issubclass(category, DataWarning) else f"{category.__name__}: {message}",
            file=sys.stderr)
        result = run_demo(args.target, sources, args.fraction, args.seed, args.data_home,
                          args.max_epochs, args.protocol)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(f"\nNext-location prediction in {result['target_city']} (protocol: {result['protocol']} "
          f"positions, full ranking, test users only):")
    print(format_table(result))
    print(f"wall time {result['wall_seconds']:.0f} s")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
