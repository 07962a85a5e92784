"""Command line: ``trajmoe demo``, the cross-city transfer experiment on real data, and
``trajmoe pretrain``, cross-city pre-training on N processes (:mod:`trajmoe.scale`).

Pre-train TrajMoE on source cities, fine-tune it for one epoch on a random share of the
target city's training users, and compare it on the target's held-out test users with
the same model trained from scratch on all of the target's training users and with the
baselines: all models on the same split, scored by full ranking.

Both commands first call :func:`trajmoe.tune_malloc` (glibc keeps freed memory for reuse).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
import warnings
from pathlib import Path

from ._constants import PROTOCOLS
from ._malloc import tune_malloc
from .exceptions import DataWarning, ShortWindowsWarning
from ._version import __version__

# the data and models (pandas, scikit-learn, torch) are imported by the commands that use them,
# so that `trajmoe --help` answers at once

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
#: Largest seed: numpy's random generators (and scikit-learn's ``random_state``) take 0..2**32 - 1.
MAX_SEED = 2**32 - 1
#: Source cities of a target where they were chosen on its validation users (seed 0, the quick
#: benchmark): NYC check-ins transfer from Singapore check-ins (Acc@1 .327) and not from the photo
#: trails and the YJMob100K grid mixed in (.249). Other targets: :data:`DEFAULT_SOURCES`, less the target.
TARGET_SOURCES = {"nyc": ("singapore",)}


def default_sources(target):
    """The demo's source cities of ``target``: :data:`TARGET_SOURCES` where given, otherwise
    :data:`DEFAULT_SOURCES` less the target (tuple of str)."""
    return TARGET_SOURCES.get(target, tuple(s for s in DEFAULT_SOURCES if s != target))


def load_city(name, data_home=None):
    """Visits and POIs of one city of :data:`CITY_LOADERS`.

    Parameters
    ----------
    name : str
        A key of :data:`CITY_LOADERS` (``"nyc"``, ``"yjmob_A"``, ``"gowalla_bay_area"``, ...).
    data_home : str or path-like, default None
        The data folder (:func:`trajmoe.datasets.get_data_home`).

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
    from . import datasets

    loader, args = CITY_LOADERS[name]
    bunch = getattr(datasets, loader)(*args, data_home=data_home)
    pois = bunch.pois
    if pois is not None:
        pois = pois[pois["city"] == name]   # YJMob ships the POIs of cities B-D too
        pois = pois if len(pois) else None
    return bunch.visits, pois


def _concat(frames):
    import pandas as pd

    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def check_sources(sources):
    """Check a list of source cities (of ``trajmoe demo`` and ``trajmoe pretrain``) before any data
    is loaded.

    Parameters
    ----------
    sources : str or sequence of str
        City names, or one comma-separated string of them (``"singapore,edinburgh"``).

    Returns
    -------
    tuple of str

    Raises
    ------
    ValueError
        If no city is named, a city is unknown (the message lists the known ones), or a city is
        listed more than once (its visits would be trained on twice).
    """
    known = sorted(CITY_LOADERS)
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",") if s.strip()]
    sources = tuple(sources)
    if not sources:
        raise ValueError(f"No source city: give at least one, e.g. {','.join(DEFAULT_SOURCES[:2])}; choose from {known}.")
    unknown = [s for s in sources if s not in CITY_LOADERS]
    if unknown:
        raise ValueError(f"Unknown source cit{'y' if len(unknown) == 1 else 'ies'} {unknown}; choose from {known} "
                         "(comma-separated).")
    twice = sorted({s for s in sources if sources.count(s) > 1})
    if twice:
        raise ValueError(f"Source cities listed more than once: {twice} (their visits would be trained on twice).")
    return sources


def check_demo_args(target, sources, fraction=0.05, seed=0, max_epochs=6, protocol="all", min_stays=5):
    """Check the arguments of :func:`run_demo` before any data is loaded.

    Parameters
    ----------
    target, sources, fraction, seed, max_epochs, protocol, min_stays
        As in :func:`run_demo`.

    Returns
    -------
    sources : tuple of str

    Raises
    ------
    ValueError
        Naming the argument, the rule and a valid value: an unknown city, no source, a source
        listed twice or equal to the target, ``fraction`` outside (0, 1], ``seed`` not an int
        >= 0, ``max_epochs`` or ``min_stays`` not an int >= 1, an unknown ``protocol``.
    """
    import numbers

    import numpy as np

    if target not in CITY_LOADERS:
        raise ValueError(f"Unknown target city {target!r}; choose from {sorted(CITY_LOADERS)}.")
    sources = check_sources(sources)
    if target in sources:
        raise ValueError(f"The target city {target!r} must not be a source city: drop it from the sources.")

    def integer(name, value, low, high=None):
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low
                or (high is not None and value > high)):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{name} must be an int {span}, got {value!r}.")

    if (isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not np.isfinite(fraction)
            or not 0 < fraction <= 1):
        raise ValueError(f"fraction must be a share of the target's training users in (0, 1], got {fraction!r} "
                         "(e.g. 0.05 for 5 %).")
    integer("seed", seed, 0, MAX_SEED)
    integer("max_epochs", max_epochs, 1)
    integer("min_stays", min_stays, 1)
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be 'all' or 'last', got {protocol!r}.")
    return sources


def _longest_window(frame, window_days, stride_days=None):
    """Most visits in one window (``window_days`` long; sliding by ``stride_days``, or not
    overlapping) of any user of ``frame``, without dropping short windows."""
    from .schema import user_codes, validate_visits
    from .sequences import time_features, window_bounds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        visits = validate_visits(frame, duplicates="ignore")
        day = time_features(visits)["day"].to_numpy()
    users = user_codes(visits)
    bounds = window_bounds(users, day, window_days, stride_days=stride_days, min_stays=1)
    return int((bounds[:, 1] - bounds[:, 0]).max()) if len(bounds) else 0


class _DataCheckError(ValueError):
    """A problem of the demo's data found before any training (the CLI prints it as a usage error)."""


def _check_windows(target, test, training, min_stays, window_days):
    """Raise before any training when the target's test users have nothing to score, or a
    training set of the target has no training window (the rule is ``min_stays``)."""
    rule = f"at least min_stays={min_stays} visits within window_days={window_days} days"
    longest = _longest_window(test, window_days)
    if longest < min_stays:
        fix = (f"lower --min-stays (to {longest} at most) or choose another target" if longest >= 2
               else "choose another target")
        raise _DataCheckError(
            f"target {target!r}: no window of its {test['user_id'].nunique()} test users has {rule} (the "
            f"longest has {longest}), so there is nothing to score: {fix}.")
    for what, frame, fix in training:
        longest = _longest_window(frame, window_days, stride_days=1)
        if longest < min_stays:
            raise _DataCheckError(
                f"target {target!r}: the {what} ({frame['user_id'].nunique()} users) has no training window with "
                f"{rule} (the longest has {longest}): {fix}.")


def run_demo(target=DEFAULT_TARGET, sources=None, fraction=0.05, seed=0, data_home=None,
             max_epochs=6, protocol="all", model_params=None, log=print, min_stays=5):
    """Run the cross-city transfer experiment and return its results table.

    Parameters
    ----------
    target : str, default "nyc"
        Target city (a key of :data:`CITY_LOADERS`).
    sources : sequence of str, optional
        Pre-training cities (the target is never among them); None: :func:`default_sources`.
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
    min_stays : int, default 5
        Visits a window needs to be trained on or scored, for every model (the models'
        default).

    Returns
    -------
    dict
        ``{"target_city", "protocol", "fraction", "seed", "rows": [{"model", "acc@1", ...,
        "mrr", "ndcg@10", "n_targets", "fit_seconds"}]}``.

    Raises
    ------
    ValueError
        If an argument is invalid (:func:`check_demo_args`: checked before any data is
        loaded), or, before any training, if the target's test users have no window with
        ``min_stays`` visits (nothing to score) or its fine-tuning or training users have no
        training window.
    """
    sources = check_demo_args(target, default_sources(target) if sources is None else sources, fraction, seed,
                              max_epochs, protocol, min_stays)
    import numpy as np

    from . import metrics
    from .estimators import (GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline, MarkovBaseline,
                             PopularityBaseline, TrajMoERegressor)
    from .estimators._counting import MOVES_GRAVITY_WEIGHT, MOVES_RULE_WEIGHT
    from .model_selection import FewShotCitySplit, train_test_users

    t0 = time.perf_counter()
    visits, pois = load_city(target, data_home)
    train_idx, val_idx, test_idx = train_test_users(visits, random_state=seed)
    target_train = visits.iloc[np.concatenate([train_idx, val_idx])]
    test = visits.iloc[test_idx]
    sample = FewShotCitySplit(target, fraction=fraction, random_state=seed)
    finetune = target_train.iloc[next(sample.finetune_samples(target_train))]
    few = finetune["user_id"].unique()
    window_days = (model_params or {}).get("window_days", 3)
    _check_windows(target, test, [
        ("fine-tuning sample", finetune, "raise --fraction or lower --min-stays"),
        ("training split", target_train, "lower --min-stays or choose another target")], min_stays, window_days)
    src = [load_city(s, data_home) for s in sources]
    src_visits = _concat([v for v, _ in src])
    src_pois = _concat([p for _, p in src])
    # every frame with its number of visits: the min_stays note counts what it left out of each
    log(f"target {target}: {visits['user_id'].nunique():,} users, {len(visits):,} visits; training split "
        f"{target_train['user_id'].nunique():,} users ({len(target_train):,} visits), fine-tune on "
        f"{len(few):,} users ({len(finetune):,} visits), test on {test['user_id'].nunique():,} users "
        f"({len(test):,} visits); sources {list(sources)}: {len(src_visits):,} visits "
        f"(loaded in {time.perf_counter() - t0:.0f} s)")

    params = dict(random_state=seed, max_epochs=max_epochs, verbose=1, min_stays=min_stays)
    params.update(model_params or {})
    rows = []

    def report(name, model, seconds):
        ranks = model.target_ranks(test, protocol=protocol).to_numpy()
        row = {"model": name, **metrics.ranking_report(ranks), "fit_seconds": round(seconds, 1),
               "epochs": len(model.net_.history) if hasattr(model, "net_") else None}
        rows.append(row)
        log(f"{name:22s} acc@1 {row['acc@1']:.3f}  acc@5 {row['acc@5']:.3f}  mrr {row['mrr']:.3f}  "
            f"({seconds:.0f} s)")

    start = time.perf_counter()
    cities = "city" if len(sources) == 1 else "cities"
    log(f"pre-training TrajMoE on {len(sources)} source {cities}, then one epoch on {fraction:.0%} of {target}")
    finetuned = TrajMoERegressor(**params).fit(src_visits, pois=src_pois)
    finetuned.partial_fit(finetune, pois=pois)
    report("trajmoe_finetuned", finetuned, time.perf_counter() - start)

    start = time.perf_counter()
    log(f"training TrajMoE from scratch on 100 % of {target}'s training users")
    full = TrajMoERegressor(**params).fit(target_train, pois=pois)
    report("trajmoe_full_target", full, time.perf_counter() - start)

    moves = functools.partial(HistoryFrequencyBaseline, moves_weight=MOVES_RULE_WEIGHT)
    gravity_moves = functools.partial(HistoryGravityBaseline, moves_weight=MOVES_GRAVITY_WEIGHT)
    for name, cls in (("history_frequency", HistoryFrequencyBaseline), ("history_moves", moves),
                      ("history_gravity", HistoryGravityBaseline), ("history_gravity_moves", gravity_moves),
                      ("gravity", GravityBaseline),
                      ("markov", MarkovBaseline), ("popularity", PopularityBaseline)):
        start = time.perf_counter()
        seeding = {"random_state": seed} if "random_state" in cls().get_params() else {}   # the gravity rules' draws
        model = cls(min_stays=min_stays, **seeding).fit(target_train, pois=pois)
        report(name, model, time.perf_counter() - start)
    return {"target_city": target, "protocol": protocol, "fraction": fraction, "seed": seed,
            "sources": list(sources), "rows": rows}


def format_table(result):
    """Plain-text table (model x metric) of :func:`run_demo`'s result."""
    import pandas as pd

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


def _number(kind, low, high=None, low_open=False):
    """argparse ``type`` for a number of ``kind`` (int or float) within bounds."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an int' if kind is int else 'a number'}") from None
        bad = (value != value or value < low or (low_open and value == low)
               or (high is not None and value > high))
        if bad:
            lo, hi = (low, high) if kind is int else (f"{low:g}", None if high is None else f"{high:g}")
            span = (f"in ({lo}, {hi}]" if low_open else f"in [{lo}, {hi}]") if high is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _check_data_home(parser, data_home):
    """The data folder (``--data-home``, else ``$TRAJMOE_DATA``) is a folder: checked before any data
    is loaded."""
    from .datasets import get_data_home
    from .datasets._home import ENV_VAR, home_source

    home = get_data_home(data_home)
    if not home.is_dir():
        source = "--data-home" if data_home is not None else home_source()
        what = "is a file, not a folder" if home.exists() else "does not exist"
        parser.error(f"data folder {home} (from {source}) {what}: point --data-home or {ENV_VAR} "
                     "at the folder that holds foursquare_nyc/, flickr_tours/, ...")


def _check_paths(parser, args):
    """The data folder exists and the output file can be written: checked before any data is loaded."""
    _check_data_home(parser, args.data_home)
    if args.output is not None:
        out = Path(args.output)
        if out.is_dir():
            parser.error(f"--output {args.output} is a folder: give a file name, e.g. {out / 'results.json'}")
        if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
            parser.error(f"--output {args.output}: folder {out.parent} does not exist or is not writable")


@contextlib.contextmanager
def _data_notes():
    """Print every distinct data warning as one ``note:`` line on stderr (other warnings by their
    class name), not as Python warnings pointing into the library's files; a note repeated word for
    word (the demo scores every model on the same users) is printed once. The visits that
    ``min_stays`` leaves out of each frame (:class:`ShortWindowsWarning`) are gathered into one
    line, printed when the block ends."""
    printed, short = set(), {}

    def show(message, category, *args, **kwargs):
        if isinstance(message, ShortWindowsWarning):
            key = (message.min_stays, message.window_days, message.kind, message.n_left_out, message.n_visits)
            short.setdefault(key, message)
            return
        line = f"note: {message}" if issubclass(category, DataWarning) else f"{category.__name__}: {message}"
        if line not in printed:
            printed.add(line)
            print(line, file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = show
            yield
    finally:
        for line in _short_windows_lines(short.values()):
            print(line, file=sys.stderr)


def _short_windows_lines(notes):
    """One ``note:`` per (min_stays, window_days) for :class:`ShortWindowsWarning` notes, then one
    indented line per windowed frame (known by its number of visits) with what each kind of
    window left out of it."""
    settings = {}
    for note in notes:
        frames = settings.setdefault((note.min_stays, note.window_days), {})
        frames.setdefault(note.n_visits, []).append(note)
    for (min_stays, window_days), frames in settings.items():
        yield (f"note: min_stays={min_stays}: visits in no window of at least {min_stays} stays within "
               f"window_days={window_days} days are left out (not trained on, not scored); lower min_stays or "
               "raise window_days to use them. Left out, per frame (known by its number of visits):")
        for n_visits, group in frames.items():
            yield f"  a frame of {n_visits:,} visits: " + "; ".join(f"{n.n_left_out:,} ({n.kind})" for n in group)


def _add_pretrain_command(subparsers, number):
    """Add ``trajmoe pretrain`` to the command line's subparsers (``number``: the CLI's
    bounded-number argparse type factory)."""
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
    if out.exists() and not out.is_dir():
        parser.error(f"{flag} {out} is a file: give a folder (several files are written into it)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        parser.error(f"{flag} {out}: {existing} is not a writable folder")


def _run_pretrain_command(args, parser):
    """Run ``trajmoe pretrain`` with parsed ``args``; returns the exit status."""
    from .estimators import TrajMoERegressor
    from .estimators._neural import check_device
    from .nn.parallel import init_from_env, is_main_process
    from .persistence import save_model
    from .scale import pretrain
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
        # the epoch table is this command's output; a user's later partial_fit stays quiet
        save_model(model.set_params(verbose=0), Path(args.output))
        print(f"rank {rank} of {world}: model saved to {args.output}")
    return 0


def main(argv=None):
    """Entry point of the ``trajmoe`` console script.

    Every argument is checked before any data is loaded (unknown or abbreviated options,
    values out of range, unknown cities, a source equal to the target, a missing data folder
    or output folder end with a usage message and exit status 2).

    Parameters
    ----------
    argv : list of str, default None
        The command line after the program name (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0); usage errors exit with status 2 (``SystemExit``).
    """
    parser = argparse.ArgumentParser(prog="trajmoe", description="TrajMoE: next-location prediction in any city.",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False,
        help="cross-city transfer on real data: pre-train, fine-tune on a few users of a new city, "
             "compare with baselines",
        description="Pre-train TrajMoE on the source cities, fine-tune it for ONE epoch on a random "
                    "share of the target city's training users, train the same model from scratch on "
                    "all of them, and score both and the baselines on the target's test users.",
        epilog="example: TRAJMOE_DATA=/path/to/data trajmoe demo --target nyc --output results.json")
    demo.add_argument("--target", default=DEFAULT_TARGET, choices=sorted(CITY_LOADERS), help="target city")
    demo.add_argument("--sources", default=argparse.SUPPRESS,
                      help=f"comma-separated source cities, not the target (default: {','.join(DEFAULT_SOURCES)}, "
                           f"less the target; for {', '.join(f'{t}: {chr(44).join(c)}' for t, c in TARGET_SOURCES.items())})")
    demo.add_argument("--fraction", type=_number(float, 0.0, 1.0, low_open=True), default=0.05,
                      help="share of the target's training users that fine-tune, in (0, 1]")
    demo.add_argument("--seed", type=_number(int, 0, MAX_SEED), default=0,
                      help=f"seed of the user split, the sample and the networks (int in [0, {MAX_SEED}])")
    demo.add_argument("--max-epochs", type=_number(int, 1), default=6,
                      help="training epochs at most, for pre-training and the from-scratch model (>= 1)")
    demo.add_argument("--min-stays", type=_number(int, 1), default=5,
                      help="visits a 3-day window needs to be trained on or scored, for every model")
    demo.add_argument("--protocol", choices=PROTOCOLS, default="all",
                      help="score every position of a window, or its last one")
    demo.add_argument("--data-home", default=None, help="data folder; unset: $TRAJMOE_DATA")
    demo.add_argument("--output", default=None, help="write the results as JSON to this file")
    pretrain = _add_pretrain_command(sub, _number)
    args = parser.parse_args(argv)
    for name in ("output", "checkpoint_dir", "data_home", "windows"):
        # '~' as the shell leaves it (--output=~/r.json): the path checked is the path written
        if getattr(args, name, None) is not None:
            setattr(args, name, os.path.expanduser(getattr(args, name)))
    tune_malloc()          # freed [tokens, cells] tensors stay for reuse (docs/speed.rst, "Memory allocator")
    if args.command == "pretrain":  # also under torchrun: `torchrun ... -m trajmoe.cli pretrain ...`
        with _data_notes():
            return _run_pretrain_command(args, pretrain)

    sources = getattr(args, "sources", None)
    if sources is None:  # the default sources of the target
        sources = default_sources(args.target)
    try:
        sources = check_demo_args(args.target, sources, args.fraction, args.seed, args.max_epochs, args.protocol,
                                  args.min_stays)
    except ValueError as exc:
        demo.error(str(exc))
    _check_paths(demo, args)
    start = time.perf_counter()
    with _data_notes():
        try:
            result = run_demo(args.target, sources, args.fraction, args.seed, args.data_home,
                              args.max_epochs, args.protocol, min_stays=args.min_stays)
        except (_DataCheckError, FileNotFoundError) as exc:  # found before any training (see run_demo)
            # FileNotFoundError: the data folder lacks a city's files (the loader's message says which)
            print(f"trajmoe demo: error: {exc}", file=sys.stderr)
            return 2
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
