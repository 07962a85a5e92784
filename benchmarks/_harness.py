"""What the benchmark scripts share: data, the user split, fraction samples, scoring, outputs.

Within a seed, every model is scored on the same target users, windows and targets, by full
ranking, under both protocols ("all" positions and the "last" position of every window). A
benchmark seed draws the user split of the target (70/10/20 by users), the few-shot user sample
and the networks' initialisation and batch order, so the spread over seeds includes the spread
between user populations; model differences are paired within a seed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import trajmoe
from trajmoe import HistoryFrequencyBaseline, metrics
from trajmoe.cli import TARGET_SOURCES, load_city
from trajmoe.exceptions import DataWarning
from trajmoe.model_selection import FewShotCitySplit, train_test_users

METRICS = ("acc@1", "acc@3", "acc@5", "acc@10", "mrr", "ndcg@10")
#: Diagnostics of every result row: shares of targets that return to a cell of the window, explore a
#: new cell, or lie outside the vocabulary, and Acc@1 / MRR on the return and explore targets.
SPLIT_METRICS = ("return_share", "oov_share", "acc@1_return", "acc@1_explore", "mrr_return", "mrr_explore")
#: Real cities with trajectories of several sources: check-ins, the YJMob100K grid, photo trails.
CITIES = ("nyc", "yjmob_A", "singapore", "edinburgh", "melbourne", "osaka", "toronto")
#: Gowalla California, one city per metro area; the largest is the third target.
GOWALLA = ("gowalla_bay_area", "gowalla_los_angeles", "gowalla_san_diego", "gowalla_sacramento",
           "gowalla_las_vegas")
TARGETS = ("nyc", "yjmob_A", "gowalla_bay_area")
#: Where a target's POI frame comes from (:func:`load_target`): ``"all"``, the loader's; ``"training"``,
#: only the venues its training users checked in at (:func:`training_venues`).
TARGET_POIS = ("all", "training")
#: Targets from the slowest (target, seed) task to the fastest: in the quick transfer run at cdc6762 the
#: models of one seed took about 10 (Gowalla Bay Area), 7.5 (YJMob100K city A) and 2 (NYC) minutes of
#: fitting. Tasks start slowest first so that the processes finish together (longest processing time
#: first); a target not named here starts before these, its cost being unknown.
SLOWEST_FIRST = ("gowalla_bay_area", "yjmob_A", "nyc")


#: Source cities of a target chosen on its validation users (the library's, shared with the demo).
SOURCES = TARGET_SOURCES


def sources_of(target):
    """The source cities of a target: :data:`SOURCES` where given, otherwise every other city of
    its group (a Gowalla metro: the other metros; any other target: every other city of
    :data:`CITIES`)."""
    if target in SOURCES:
        return SOURCES[target]
    group = GOWALLA if target in GOWALLA else CITIES
    return tuple(c for c in group if c != target)


def task_list(targets, seeds):
    """The (target, seed) tasks of a benchmark run, in the order they start: the targets of
    :data:`SLOWEST_FIRST` slowest first, each over every seed; the order of the results does not
    depend on it."""
    rank = {city: i for i, city in enumerate(SLOWEST_FIRST)}
    tasks = [(target, seed) for target in targets for seed in seeds]
    return sorted(tasks, key=lambda task: rank.get(task[0], -1))


@dataclass
class Target:
    """A target city split by users: ``train`` (70 %), ``val`` (10 %), ``test`` (20 %)."""

    name: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    pois: pd.DataFrame | None

    def eval_users(self, split):
        return self.test if split == "test" else self.val


def _cap_users(visits, max_users, seed=0):
    """At most ``max_users`` users, drawn at random (fixed seed); None keeps everyone."""
    users = visits["user_id"].unique()
    if max_users is None or len(users) <= max_users:
        return visits
    keep = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
    return visits[visits["user_id"].isin(keep)]


def load_target(name, data_home=None, train_users=None, eval_users=None, split_seed=0, pois_from="all"):
    """Load a target city, split it 70/10/20 by users with ``split_seed``, and keep at most
    ``train_users`` random training users and ``eval_users`` random validation and test users
    (None keeps all). ``pois_from`` (one of :data:`TARGET_POIS`): ``"training"`` keeps the POIs
    of :func:`training_venues` (the venues all of the 70 % checked in at, before the cap)."""
    if pois_from not in TARGET_POIS:
        raise ValueError(f"pois_from must be one of {TARGET_POIS}, got {pois_from!r}")
    visits, pois = load_city(name, data_home)
    train, val, test = train_test_users(visits, random_state=split_seed)
    if pois_from == "training":
        pois = training_venues(pois, visits.iloc[train])
    cap = lambda frame, n: _cap_users(frame, n, seed=split_seed)  # noqa: E731
    return Target(name, cap(visits.iloc[train], train_users), cap(visits.iloc[val], eval_users),
                  cap(visits.iloc[test], eval_users), pois)


def training_venues(pois, train):
    """The rows of ``pois`` at the venues the visits ``train`` checked in at.

    The check-in datasets' POI frames (Foursquare, Gowalla) are their venues: every venue that
    anyone checked in at, so a venue only evaluation users visited says where one of them went.
    Cut to the training users' venues, the frame tells a model nothing about those users. A frame
    without ``venue_id`` (YJMob100K's POI counts per cell, which no user's visits made) or visits
    without it are returned as they are; so is None.
    """
    if pois is None or "venue_id" not in pois or "venue_id" not in train:
        return pois
    return pois[pois["venue_id"].isin(train["venue_id"].unique())]


def load_sources(names, data_home=None, max_users=None):
    """Visits and POIs of the source cities (``max_users``: dict city -> at most that many random
    users; cities not in it keep all)."""
    frames, poi_frames = [], []
    for name in names:
        visits, pois = load_city(name, data_home)
        frames.append(_cap_users(visits, (max_users or {}).get(name)))
        if pois is not None:
            poi_frames.append(pois)
    return pd.concat(frames, ignore_index=True), (pd.concat(poi_frames, ignore_index=True) if poi_frames else None)


def few_shot_sample(target, fraction, seed):
    """Visits of a random ``fraction`` of the target's training users (at least one user), drawn
    with ``seed`` by :meth:`trajmoe.model_selection.FewShotCitySplit.finetune_samples`."""
    sample = FewShotCitySplit(target.name, fraction=fraction, random_state=seed)
    return target.train.iloc[next(sample.finetune_samples(target.train))]


class Scorer:
    """Scores models on one evaluation frame under both protocols.

    The "last" protocol keeps the last target of each window; for causal models its ranks are
    those of the "all" protocol at those rows, so every model runs one pass.
    """

    def __init__(self, target, split="test"):
        self.target = target
        self.frame = target.eval_users(split)
        self._last_rows = {}

    def last_rows(self, model):
        """Rows of the last target of every window, for the model's window parameters."""
        key = (model.window_days, model.min_stays, model.max_tokens)
        if key not in self._last_rows:
            reference = HistoryFrequencyBaseline(window_days=key[0], min_stays=key[1], max_tokens=key[2])
            reference.fit(self.target.train, pois=self.target.pois)
            self._last_rows[key] = reference.target_ranks(self.frame, protocol="last").index
        return self._last_rows[key]

    def rows(self, model, name, fraction, seed, seconds, **extra):
        """Result rows (one per protocol) of a fitted model, with the return / explore split."""
        table = model.target_table(self.frame, protocol="all")
        out = []
        for protocol, t in (("all", table), ("last", table.loc[self.last_rows(model)])):
            report = metrics.ranking_report(t["rank"].to_numpy(), kind=t["kind"].to_numpy(), oov=t["oov"].to_numpy())
            out.append({"target_city": self.target.name, "model": name, "fraction": fraction, "seed": seed,
                        "protocol": protocol, **{m: round(report[m], 5) for m in METRICS + SPLIT_METRICS},
                        "n_targets": report["n_targets"], "fit_seconds": round(seconds, 1),
                        **({"epochs": len(model.net_.history)} if hasattr(model, "net_") else {}), **extra})
        return out


# ----------------------------------------------------------------------------- arguments
def comma_list(text, convert, what, check):
    """argparse helper: ``text`` split on commas, each item converted and checked, as a tuple
    (ArgumentTypeError naming ``what`` on an empty list, a failed conversion or a failed check)."""
    try:
        values = tuple(convert(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    bad = [v for v in values if not check(v)]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
    return values


def seed_list(text):
    """argparse type: comma-separated ints >= 0."""
    return comma_list(text, int, "seeds (ints >= 0)", lambda v: v >= 0)


def fraction_list(text):
    """argparse type: comma-separated shares in (0, 1]."""
    return comma_list(text, float, "fractions in (0, 1]", lambda v: 0 < v <= 1)


def city_list(text):
    """argparse type: comma-separated names of :data:`CITIES` and :data:`GOWALLA`."""
    return comma_list(text, str, f"cities among {', '.join(CITIES + GOWALLA)}", lambda v: v in CITIES + GOWALLA)


def source_caps(text):
    """argparse type: comma-separated ``CITY=N`` (at most N >= 1 users of that source city) or
    ``CITY=all`` (no cap), each city once, among :data:`CITIES` and :data:`GOWALLA` (spaces around
    the items and the ``=`` are ignored); a dict city -> int or None. The error names the item
    that fails and why."""
    caps = {}
    for item in text.split(","):
        city, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not city or not value:
            raise argparse.ArgumentTypeError(f"{item.strip()!r}: expected CITY=N or CITY=all")
        if city not in CITIES + GOWALLA:
            raise argparse.ArgumentTypeError(f"{city!r}: unknown city; choose among {', '.join(CITIES + GOWALLA)}")
        if city in caps:
            raise argparse.ArgumentTypeError(f"{city!r} is given twice: give each city once")
        if value != "all" and not (value.isascii() and value.isdigit() and int(value) >= 1):
            raise argparse.ArgumentTypeError(f"{item.strip()!r}: N must be an int >= 1, or 'all' for no cap")
        caps[city] = None if value == "all" else int(value)
    return caps


def positive_int(text):
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def seeded(cls, seed, **params):
    """An estimator of ``cls`` with ``params``, and ``random_state=seed`` where it takes one (the
    gravity rules draw the targets their fit selects on): the same seed, the same fitted rule."""
    if "random_state" in cls().get_params():
        params["random_state"] = seed
    return cls(**params)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def quiet_data_notes():
    """Data notes (dropped rows) once, as one line each, not as Python warnings."""
    warnings.simplefilter("once", DataWarning)
    warnings.showwarning = lambda message, category, *args, **kwargs: print(
        f"note: {message}" if issubclass(category, DataWarning) else f"{category.__name__}: {message}")


# ----------------------------------------------------------------------------- outputs
def summary(results, group=("target_city", "protocol", "model", "fraction")):
    """Mean and standard deviation over seeds of every metric."""
    frame = pd.DataFrame(results)
    columns = [m for m in (*METRICS, *SPLIT_METRICS) if m in frame] + ["fit_seconds"]
    agg = frame.groupby(list(group), sort=False)[columns].agg(["mean", "std"])
    agg[("n_seeds", "")] = frame.groupby(list(group), sort=False)["seed"].nunique()
    return agg


def paired_margins(results, model, fraction, versus):
    """Seed-wise (paired: same users within a seed) differences ``model - versus`` of Acc@1 and MRR.

    ``versus``: (model, fraction) pairs. A fraction of None, there or as ``fraction``, takes every
    row of the model (for rows without a ``fraction`` column). Returns a DataFrame indexed by
    (target_city, protocol, versus) with the mean and standard deviation of the differences and
    whether the mean exceeds the standard deviation.
    """
    frame = pd.DataFrame(results)
    keys = ["target_city", "protocol", "seed"]

    def rows_of(name, share):
        chosen = frame.model == name
        return frame[chosen if share is None else chosen & np.isclose(frame.fraction, share)].set_index(keys)

    ours = rows_of(model, fraction)
    rows = []
    for other, other_fraction in versus:
        theirs = rows_of(other, other_fraction)
        for metric in ("acc@1", "mrr"):
            diff = (ours[metric] - theirs[metric]).dropna()
            for (city, protocol), d in diff.groupby(level=[0, 1]):
                std = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
                rows.append({"target_city": city, "protocol": protocol, "versus": other, "metric": metric,
                             "mean_diff": float(d.mean()), "std_diff": std, "n_seeds": len(d),
                             "holds": bool(d.mean() > (std if np.isfinite(std) else 0.0) and d.mean() > 0)})
    return pd.DataFrame(rows)


def markdown_tables(results, title, settings):
    """Markdown: one table per target city and protocol, mean ± std over seeds."""
    agg = summary(results)
    frame = pd.DataFrame(results)
    lines = [f"# {title}", "", settings, "",
             "Cells: mean ± standard deviation over seeds (no ± where every seed gives the same value). "
             "fit s: seconds of training of that model; for a fine-tuned model the fine-tune only (its "
             "pre-training is `pretrain_seconds` in the JSON). Ranks count ties pessimistically. "
             "return / explore: Acc@1 on the targets that return to a cell already visited in the window / "
             "that go to a new cell; the table title gives their shares and the share of targets outside "
             "the model's vocabulary (always a miss).", ""]
    shown = [m for m in (*METRICS, "acc@1_return", "acc@1_explore") if (m, "mean") in agg]
    for (city, protocol), block in agg.groupby(level=[0, 1], sort=False):
        counts = frame[(frame.target_city == city) & (frame.protocol == protocol)].groupby("seed")["n_targets"].first()
        span = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
        shares = ""
        if ("return_share", "mean") in block:
            shares = (f"; {block[('return_share', 'mean')].iloc[0]:.0%} return, oov share per model "
                      f"{block[('oov_share', 'mean')].min():.1%}-{block[('oov_share', 'mean')].max():.1%}")
        lines += [f"## {city}, protocol `{protocol}` ({span} targets per seed{shares})", "",
                  "| model | fraction | " + " | ".join(m.replace("acc@1_", "") for m in shown) + " | fit s | seeds |",
                  "|---|---|" + "---|" * (len(shown) + 2)]
        for (_, _, model, fraction), row in block.iterrows():
            cells = [_mean_std(row[(m, "mean")], row[(m, "std")]) for m in shown]
            lines.append(f"| {model} | {fraction:g} | " + " | ".join(cells)
                         + f" | {row[('fit_seconds', 'mean')]:.0f} | {int(row[('n_seeds', '')])} |")
        lines.append("")
    return "\n".join(lines)


def frame_markdown(frame, floatfmt="{:.4f}"):
    """A DataFrame as a Markdown table (no extra dependency)."""
    cells = [[floatfmt.format(v) if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _mean_std(mean, std):
    return f"{mean:.4f}" if not np.isfinite(std) or std == 0 else f"{mean:.4f} ± {std:.4f}"


def environment():
    """The versions and machine a result was measured with.

    Returns
    -------
    dict
        ``trajmoe``, ``torch`` and ``python`` versions (str), ``threads`` (int, torch's), ``machine``
        (str, e.g. ``"x86_64"``) and ``gpu`` (str, the name of the GPU torch sees, where the
        estimators' ``device="auto"`` then trains and scores; None without one).
    """
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"trajmoe": trajmoe.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "machine": platform.machine(), "gpu": gpu}


def strict_json(value):
    """``value`` with every float NaN or infinity as None, so that it is standard JSON.

    Strict readers (JavaScript's ``JSON.parse``, Python's ``parse_constant``) refuse ``NaN``: a
    figure that does not exist (no learning rate recorded, no target of a kind) is ``null``.

    Parameters
    ----------
    value : dict, list, tuple, float or any JSON-serialisable value
        Nested at any depth; tuples become lists.

    Returns
    -------
    The same structure, non-finite floats replaced by None.
    """
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, payload):
    """Write ``payload`` as indented standard JSON (:func:`strict_json`), creating the folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(strict_json(payload), fh, indent=1, allow_nan=False)
