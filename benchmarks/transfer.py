"""The paper's transfer claims, measured side by side on public data.

For each target city (Foursquare NYC, YJMob100K city A and Gowalla Bay Area by default), pre-trained
on its source cities (:func:`_harness.sources_of`, chosen on validation users):

* ``trajmoe_finetuned``: TrajMoE pre-trained on the sources, then ONE epoch on 1 %, 5 % and
  10 % of the target's training users (docs/method.rst, "Training protocol");
* ``trajmoe_full_target``: the same model trained from scratch on 100 % of the target's
  training users (single city);
* ``trajmoe_multi_city``: trained on the sources and the target jointly (full mode; quick mode
  with ``--models``);
* ``trajmoe_paper_finetuned``: the paper's network (no copy path, no distance prior, linear
  coordinates), pre-trained and fine-tuned the same way;
* the neural baselines ``lstm`` and ``transformer`` as the literature runs them (per-city location
  ID embeddings and time features, trained on 100 % of the target's training users);
* the counting baselines ``history_frequency``, ``markov``, ``popularity``, and the distance rules
  ``gravity`` and ``history_gravity`` (parameters fitted on the target's training users);
  ``history_moves``: history frequency with the window's own moves from the current cell
  (``moves_weight`` ``trajmoe.estimators._counting.MOVES_RULE_WEIGHT``, chosen on validation
  users); ``history_gravity_moves``: history + gravity with those moves counted as visits
  (``moves_weight`` ``MOVES_GRAVITY_WEIGHT``, chosen the same way);
* ``history_moves_few_shot``, ``history_gravity_few_shot``, ``history_gravity_moves_few_shot``: the
  three strongest rules fitted on the fine-tuning sample alone (the same users as the fine-tuned
  model), to tell what the pre-training adds from what 100 % of the target's users give a rule.

All are scored on the target's test users (70/10/20 split by users) under both protocols, by full
ranking. A seed draws the user split, the few-shot user sample and the networks' initialisation;
within a seed every model sees the same users, so differences are paired.

Targets: Foursquare NYC, YJMob100K city A and Gowalla Bay Area (sources: the other Gowalla
metros). Run ``python benchmarks/transfer.py --quick --output benchmarks/results/transfer_quick.json``
(9.4 minutes on 2 CPU cores at 4bb078d, 8.8 at c42db2d, 9.5 at 3e0ecfe; quick mode fine-tunes
on 5 % only and runs
:data:`QUICK_MODELS`) or without ``--quick`` for the full data (hours; the script
prints the projected time left after each (target, seed) task). ``--split val`` scores the validation users
instead: choose settings there, never on the test users.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (TARGET_POIS, TARGETS, Scorer, city_list, environment, few_shot_sample, seeded,  # noqa: E402
                      fraction_list, frame_markdown, load_sources, load_target, markdown_tables, paired_margins,
                      positive_int, quiet_data_notes, seed_list, source_caps, sources_of, task_list, timed,
                      write_json)

from trajmoe import (GravityBaseline, HistoryFrequencyBaseline, HistoryGravityBaseline, LSTMRegressor,  # noqa: E402
                     MarkovBaseline, PopularityBaseline, TrajMoERegressor, TransformerRegressor, tune_malloc)
from trajmoe.estimators._counting import MOVES_GRAVITY_WEIGHT, MOVES_RULE_WEIGHT  # noqa: E402

MODELS = ("trajmoe_finetuned", "trajmoe_paper_finetuned", "trajmoe_full_target", "trajmoe_multi_city", "lstm",
          "transformer", "history_frequency", "history_moves", "history_gravity", "history_gravity_moves", "gravity", "markov",
          "popularity", "history_moves_few_shot", "history_gravity_few_shot", "history_gravity_moves_few_shot")
#: The models of quick mode: those the transfer claims are checked against. Joint training on the
#: sources and the target (``trajmoe_multi_city``) is the slowest model of a task: a quarter of the
#: fitting time of the quick run at cdc6762, where it scored Acc@1 .222 / .165 / .212 on Gowalla Bay
#: Area / NYC / YJMob A against .225 / .224 / .215 fine-tuned (mean of 3 seeds). Full mode runs it,
#: and quick mode with ``--models``.
QUICK_MODELS = tuple(m for m in MODELS if m != "trajmoe_multi_city")
COUNTING = {"history_frequency": HistoryFrequencyBaseline,
            "history_moves": functools.partial(HistoryFrequencyBaseline, moves_weight=MOVES_RULE_WEIGHT),
            "history_gravity": HistoryGravityBaseline,
            "history_gravity_moves": functools.partial(HistoryGravityBaseline, moves_weight=MOVES_GRAVITY_WEIGHT),
            "gravity": GravityBaseline, "markov": MarkovBaseline, "popularity": PopularityBaseline}
#: Rules fitted on the fine-tuning sample (each fraction's users) instead of all training users.
FEW_SHOT = {f"{name}_few_shot": COUNTING[name] for name in ("history_moves", "history_gravity", "history_gravity_moves")}
#: The paper's network: feature-only candidates, linear coordinates, no copy path, no distance or
#: history prior.
PAPER = {"copy_path": False, "distance_prior": False, "history_prior": False, "coord_encoding": "linear",
         "learned_weight": 1.0}
NEURAL = {"lstm": LSTMRegressor, "transformer": TransformerRegressor}
#: Settings of the literature baselines, chosen on validation users (quick mode, seed 0) against the
#: estimators' defaults (lr 1e-3, dropout 0.1): Acc@1 NYC .010 / .009 against .003 / .000 (LSTM /
#: Transformer), Gowalla .044 / .038 against .044 / .007, YJMob A 0 either way.
LITERATURE = {"lr": 1e-2, "dropout": 0.3}


@dataclass
class Settings:
    """Data sizes and training budget of a run."""

    train_users: dict = field(default_factory=dict)    # target city -> max training users (None = all)
    eval_users: dict = field(default_factory=dict)     # target city -> max validation / test users
    source_users: dict = field(default_factory=dict)   # source city -> max users (absent = all)
    max_epochs: int = 50
    baseline_epochs: int | None = 50                   # the literature LSTM / Transformer; None: not run
    fractions: tuple = (0.01, 0.05, 0.10)
    seeds: tuple = (0, 1, 2)
    target_pois: str = "all"                           # _harness.TARGET_POIS

    def describe(self):
        users = ", ".join(f"{c} {self.train_users.get(c) or 'all'} training / {self.eval_users.get(c) or 'all'} "
                          f"evaluation users" for c in self.train_users)
        sources = ", ".join(f"{c} {n}" for c, n in self.source_users.items()) or "all"
        return (f"targets: {users}; source users at most: {sources}; "
                f"at most {self.max_epochs} epochs"
                + (f", {self.baseline_epochs} for the literature LSTM / Transformer" if self.baseline_epochs else "")
                + " (early stopping on 10 % held-out users); "
                f"fractions {list(self.fractions)}; seeds {list(self.seeds)}"
                + ("; target POI frames cut to the training users' venues (check-in targets; YJMob100K's POI "
                   "counts per cell unchanged)" if self.target_pois == "training" else ""))


#: YJMob100K is the slow city: every position is ranked against its 43,000 cells.
QUICK = Settings(train_users={"nyc": 150, "yjmob_A": 50, "gowalla_bay_area": 200},
                 eval_users={"nyc": None, "yjmob_A": 50, "gowalla_bay_area": None},
                 source_users={"nyc": 150, "yjmob_A": 50, "singapore": 300, "gowalla_los_angeles": 200},
                 max_epochs=2, baseline_epochs=10, fractions=(0.05,))
FULL = Settings(train_users={"nyc": None, "yjmob_A": None, "gowalla_bay_area": None},
                eval_users={"nyc": None, "yjmob_A": None, "gowalla_bay_area": None},
                source_users={}, max_epochs=50)


def run_task(target, seed, sources, settings, split="test", models=MODELS, model_params=None, data_home=None,
             threads=None, log=print):
    """All models of one target city and one seed; returns the result rows."""
    if threads:
        torch.set_num_threads(threads)
    tune_malloc()
    quiet_data_notes()
    t = load_target(target, data_home, settings.train_users.get(target), settings.eval_users.get(target), seed,
                    settings.target_pois)
    score = Scorer(t, split)
    results = []

    def add(rows):
        results.extend(rows)
        row = rows[0]
        log(f"  seed {seed} {target:8s} {row['model']:20s} {row['fraction']:5.2f}  acc@1 {row['acc@1']:.4f}  "
            f"mrr {row['mrr']:.4f}  ({row['fit_seconds']:.0f} s)", flush=True)

    def trajmoe(**extra):
        return TrajMoERegressor(random_state=seed, max_epochs=settings.max_epochs, **{**(model_params or {}), **extra})

    src_visits, src_pois = load_sources(sources, data_home, settings.source_users)
    samples = {fraction: few_shot_sample(t, fraction, seed) for fraction in settings.fractions}
    for name, extra in (("trajmoe_finetuned", {}), ("trajmoe_paper_finetuned", PAPER)):
        if name not in models:
            continue
        pretrained, pre_seconds = timed(lambda: trajmoe(**extra).fit(src_visits, pois=src_pois))
        for fraction, few in samples.items():
            model = copy.deepcopy(pretrained)
            _, seconds = timed(lambda: model.partial_fit(few, pois=t.pois))
            add(score.rows(model, name, fraction, seed, seconds,
                           pretrain_seconds=round(pre_seconds, 1), n_users=few.user_id.nunique()))
    if "trajmoe_full_target" in models:
        model, seconds = timed(lambda: trajmoe().fit(t.train, pois=t.pois))
        add(score.rows(model, "trajmoe_full_target", 1.0, seed, seconds))
    if "trajmoe_multi_city" in models:
        joint = pd.concat([src_visits, t.train], ignore_index=True)
        pois = pd.concat([p for p in (src_pois, t.pois) if p is not None], ignore_index=True)
        model, seconds = timed(lambda: trajmoe().fit(joint, pois=pois))
        add(score.rows(model, "trajmoe_multi_city", 1.0, seed, seconds))
    for name, cls in NEURAL.items():
        if name in models:
            est = cls(random_state=seed, max_epochs=settings.baseline_epochs, **LITERATURE)
            model, seconds = timed(lambda: est.fit(t.train, pois=t.pois))
            add(score.rows(model, name, 1.0, seed, seconds))
    for name, cls in COUNTING.items():
        if name in models:
            model, seconds = timed(lambda: seeded(cls, seed).fit(t.train, pois=t.pois))
            add(score.rows(model, name, 1.0, seed, seconds))
    for name, cls in FEW_SHOT.items():
        if name in models:
            for fraction, few in samples.items():
                model, seconds = timed(lambda: seeded(cls, seed).fit(few, pois=t.pois))
                add(score.rows(model, name, fraction, seed, seconds, n_users=few.user_id.nunique()))
    return results


def run(targets=TARGETS, settings=QUICK, split="test", models=MODELS, model_params=None, data_home=None,
        jobs=2, log=print):
    """Run the transfer benchmark, one task per (target, seed) on ``jobs`` processes (one torch thread
    each); returns the result rows (see the module docstring)."""
    tasks = task_list(targets, settings.seeds)
    for target in targets:
        log(f"{target}: sources {list(sources_of(target))}")
    threads = 1 if jobs > 1 else None
    outs = Parallel(n_jobs=jobs, return_as="generator_unordered")(
        delayed(run_task)(target, seed, sources_of(target), settings, split, models, model_params, data_home,
                          threads, log)
        for target, seed in tasks)
    return collect(outs, len(tasks), log)


def collect(outs, n_tasks, log=print):
    """Gather the rows of finished tasks, printing the time spent and a projection of the rest."""
    start = time.perf_counter()
    finished = []
    for done, rows in enumerate(outs, start=1):
        finished.append(rows)
        elapsed = time.perf_counter() - start
        log(f"{done}/{n_tasks} tasks done in {elapsed / 60:.1f} min; about "
            f"{elapsed / done * (n_tasks - done) / 60:.0f} min left", flush=True)
    finished.sort(key=lambda rows: (rows[0]["target_city"], rows[0]["seed"]))   # the order of the tasks
    return [row for rows in finished for row in rows]


def claims(results):
    """The issue's bar: fine-tuned on 5 % vs the single-city model and every baseline (paired)."""
    versus = [("trajmoe_full_target", 1.0), ("trajmoe_multi_city", 1.0), ("trajmoe_paper_finetuned", 0.05),
              ("lstm", 1.0), ("transformer", 1.0), ("history_frequency", 1.0), ("history_moves", 1.0),
              ("history_gravity", 1.0), ("history_gravity_moves", 1.0),
              ("gravity", 1.0), ("markov", 1.0), ("popularity", 1.0),
              *((name, 0.05) for name in FEW_SHOT)]
    return paired_margins(results, "trajmoe_finetuned", 0.05, versus)


def plot(results, path):
    """Acc@1 (protocol "all") against the target fraction, with the single-city line
    (:func:`trajmoe.plotting.plot_transfer_curve`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trajmoe.plotting import plot_transfer_curve

    styles = {"trajmoe_full_target": ("C3", "-", "TrajMoE, 100 % of the city"),
              "trajmoe_multi_city": ("C2", "-.", "TrajMoE, sources + city jointly"),
              "history_frequency": ("0.4", "--", "history frequency"),
              "history_moves": ("0.6", "--", "history frequency + moves"),
              "history_gravity": ("0.2", "--", "history + gravity rule"),
              "history_gravity_moves": ("0.2", "-.", "history + gravity + moves rule"),
              "transformer": ("C4", ":", "Transformer"), "lstm": ("C5", ":", "LSTM")}
    run = {row["model"] for row in results}          # the lines of the models this run has
    results = [row for row in results if row["model"] not in FEW_SHOT]     # horizontal lines are 100 % models
    fig, _ = plot_transfer_curve(results, "acc@1", curve="trajmoe_finetuned", label="TrajMoE, pre-trained + 1 epoch",
                                 references={model: {"color": color, "linestyle": style, "label": label}
                                             for model, (color, style, label) in styles.items() if model in run})
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="capped users and epochs, 5 %% only, QUICK_MODELS: about 10 min on 2 cores")
    parser.add_argument("--targets", type=city_list, default=",".join(TARGETS), help="comma-separated target cities")
    parser.add_argument("--jobs", type=positive_int, default=2, help="parallel processes (one torch thread each)")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--fractions", type=fraction_list, default=None,
                        help="comma-separated shares of the target's training users (default: 0.05 in quick "
                             "mode, 0.01,0.05,0.1 in full mode)")
    parser.add_argument("--models", default=None,
                        help="comma-separated models (default: QUICK_MODELS in quick mode, all otherwise)")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="score test users, or validation users (to choose settings)")
    parser.add_argument("--model-params", default=None, help="JSON of extra TrajMoERegressor parameters")
    parser.add_argument("--max-epochs", type=positive_int, default=None,
                        help="override the mode's epoch budgets (TrajMoE's and the literature baselines')")
    parser.add_argument("--source-users", type=source_caps, default=None,
                        help="comma-separated CITY=N or CITY=all: the most users of those source cities (drawn "
                             "with a fixed seed), replacing the mode's caps for them (quick mode: "
                             + ", ".join(f"{c} {n}" for c, n in QUICK.source_users.items()) + "; full mode: all); "
                             "each city must be a source of a target run")
    parser.add_argument("--target-pois", choices=TARGET_POIS, default="all",
                        help="the target's POI frame: the loader's, or only the venues all its training users "
                             "checked in at (a check-in dataset's venues include those only evaluation users "
                             "visited); no effect on YJMob100K's POI counts per cell")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--output", default=None, help="JSON results file (Markdown and PNG beside it)")
    args = parser.parse_args(argv)

    base = QUICK if args.quick else FULL
    capped = {city: n for city, n in {**base.source_users, **(args.source_users or {})}.items() if n is not None}
    settings = Settings(train_users=base.train_users, eval_users=base.eval_users, source_users=capped,
                        max_epochs=args.max_epochs or base.max_epochs,
                        baseline_epochs=args.max_epochs or base.baseline_epochs,
                        fractions=args.fractions or base.fractions,
                        seeds=args.seeds, target_pois=args.target_pois)
    targets = args.targets
    sources = {city for t in targets for city in sources_of(t)}
    stray = sorted(set(args.source_users or {}) - sources)
    if stray:
        parser.error(f"--source-users names {stray}, which are not sources of the targets run: "
                     + "; ".join(f"{t} <- {', '.join(sources_of(t))}" for t in targets))
    models = tuple(args.models.split(",")) if args.models else QUICK_MODELS if args.quick else MODELS
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    model_params = None
    if args.model_params:
        try:
            model_params = json.loads(args.model_params)
            TrajMoERegressor(**model_params)._check_params()
            TrajMoERegressor(**model_params)._module_params()
        except (ValueError, TypeError) as exc:
            parser.error(f"--model-params must be a JSON object of valid TrajMoERegressor parameters: {exc}")
    quiet_data_notes()
    print(f"{'quick' if args.quick else 'full'} mode; {settings.describe()}")
    start = time.perf_counter()
    results = run(targets, settings, args.split, models, model_params, args.data_home, args.jobs)
    wall = time.perf_counter() - start
    description = (f"{'Quick' if args.quick else 'Full'} mode, scored on {args.split} users. "
                   f"{settings.describe()}. Sources: "
                   f"{'; '.join(f'{t} <- {chr(44).join(sources_of(t))}' for t in targets)}. "
                   f"TrajMoE preset small "
                   f"(2 layers, d 64){', ' + json.dumps(model_params) if model_params else ''}. "
                   f"Full ranking over every cell of the target city. Wall time {wall / 60:.1f} min.")
    table = markdown_tables(results, "Cross-city transfer", description)
    margins = claims(results)
    text = table + "\n## Fine-tuned on 5 % vs the others (paired over seeds)\n\n" + (
        frame_markdown(margins) if len(margins) else "(not enough models run)") + "\n"
    print(text)
    if args.output:
        out = Path(args.output)
        write_json(out, {"benchmark": "transfer", "mode": "quick" if args.quick else "full", "split": args.split,
                         "settings": settings.describe(), "sources": {t: list(sources_of(t)) for t in targets},
                         "source_users": {c: settings.source_users.get(c) for c in sorted(sources)},
                         "target_pois": settings.target_pois,
                         "model_params": model_params,
                         "wall_seconds": round(wall, 1), "environment": environment(), "results": results})
        out.with_suffix(".md").write_text(text)
        if "trajmoe_finetuned" not in models:          # the plot's curve
            print(f"results: {out}, {out.with_suffix('.md')} (no plot: trajmoe_finetuned was not run)")
            return 0
        try:
            plot(results, out.with_suffix(".png"))
        except ImportError:
            print(f"results: {out}, {out.with_suffix('.md')} (no plot: matplotlib is not installed; "
                  f"python3 -m pip install -e \".[plot]\")")
        else:
            print(f"results: {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
