"""Ablations of SAMoE (docs/method.rst, "The SAMoE network"), measured in the transfer setting of transfer.py.

Each variant is pre-trained on the target's source cities and fine-tuned for ONE epoch on 5 % of
the target's training users, on the same split, seeds and scoring as ``transfer.py``:

* ``trajmoe``: the library's default (STAR router, soft selector, shared expert, distance prior,
  history prior with the window's moves, return scorer trained in fine-tuning, linear coordinates, no
  copy path);
* ``faithful``: the paper's network (no copy path, no distance or history prior);
* ``feature_only``: the default without the history prior (no copy path, no per-cell embedding
  either): what the network learns from location features and distances alone;
* ``no_history_prior``, ``no_distance_prior``: the default without one of them; ``copy_path``:
  plus the copy (pointer) path, the default of earlier versions; ``sinusoidal_coords``: plus
  multi-scale sinusoidal coordinates (Space2Vec); ``cell_embedding``: plus the per-cell residual
  embedding; ``no_history_moves``: without the user's own moves in the window from the current
  cell, the third term of the history prior (the default of earlier versions);
* ``paper_popularity``: the default with the paper's popularity bins, ranked among the visited cells
  (``SpatialSemanticEncoder(popularity_rank="visited")``) instead of every cell of the open
  vocabulary;
* ``as_trained``: the default's fitted model scored with its learned terms at full weight
  (``learned_weight=1``) instead of the default's log-linear pool with the rule priors (0.5); a
  variant that changes only how the model scores reuses the fitted model of the variant it
  departs from (:data:`SCORING_PARAMS`), which a refit would repeat exactly;
* ``no_shared_expert``, ``no_mixture`` (one plain FFN), ``no_selector``, ``no_temporal_router``
  (spatial gate only), ``no_spatial_router`` (temporal gate only): the paper's five ablations;
* ``sparse_top2``: sparse noisy top-2 gating of the three specialists (Shazeer et al. 2017).
* ``no_return_scorer``: the default without its learned return scorer (``return_scorer=False``, the
  default of earlier versions; the default trains the scorer in fine-tuning only), ``return_scorer``:
  the scorer trained in pre-training as well (``return_scorer=True``).

Quick mode runs :data:`QUICK_VARIANTS` (8.1 minutes on 2 CPU cores at c42db2d, 7.5 at 3e0ecfe, 7.8 at c7c7a77):
``python benchmarks/ablation.py --quick --output benchmarks/results/ablation_quick.json``;
``--variants`` names others (every variant: ``--variants all``, about 45 minutes in quick mode before
the speed-ups of b718453, not re-measured since).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (TARGET_POIS, TARGETS, Scorer, city_list, environment, few_shot_sample,  # noqa: E402
                      frame_markdown, load_sources, load_target, markdown_tables, paired_margins, positive_int,
                      quiet_data_notes, seed_list, sources_of, task_list, timed, write_json)
from transfer import FULL, QUICK, Settings, collect  # noqa: E402

from trajmoe import (HistoryFrequencyBaseline, MarkovBaseline, SpatialSemanticEncoder, TrajMoERegressor,  # noqa: E402
                     tune_malloc)

VARIANTS = {
    "trajmoe": {},
    "faithful": {"copy_path": False, "distance_prior": False, "history_prior": False, "coord_encoding": "linear",
                 "learned_weight": 1.0},
    "feature_only": {"history_prior": False},
    "copy_path": {"copy_path": True},
    "no_history_prior": {"history_prior": False},
    "no_distance_prior": {"distance_prior": False},
    "sinusoidal_coords": {"coord_encoding": "sinusoidal"},
    "cell_embedding": {"cell_embedding": True},
    "no_history_moves": {"history_moves": False},
    "paper_popularity": {"encoder": SpatialSemanticEncoder(popularity_rank="visited")},
    "as_trained": {"learned_weight": 1.0},
    "no_shared_expert": {"shared_expert": False},
    "no_mixture": {"experts": False},
    "no_selector": {"selector": "none"},
    "no_temporal_router": {"router": "spatial"},
    "no_spatial_router": {"router": "temporal"},
    "sparse_top2": {"top_k": 2},
    "no_return_scorer": {"return_scorer": False},
    "return_scorer": {"return_scorer": True},
}
#: The variants of quick mode: the spatial additions and the paper's network.
QUICK_VARIANTS = ("trajmoe", "faithful", "feature_only", "copy_path", "paper_popularity", "as_trained", "no_return_scorer")
#: Parameters that change how a fitted model scores, not how it is fitted.
SCORING_PARAMS = ("learned_weight",)
FRACTION = 0.05


def run_task(target, seed, settings, variants, split="test", data_home=None, threads=None, log=print):
    """Every variant on one target and one seed; returns the result rows."""
    if threads:
        torch.set_num_threads(threads)
    tune_malloc()
    quiet_data_notes()
    t = load_target(target, data_home, settings.train_users.get(target), settings.eval_users.get(target), seed,
                    settings.target_pois)
    score = Scorer(t, split)
    src_visits, src_pois = load_sources(sources_of(target), data_home, settings.source_users)
    few = few_shot_sample(t, FRACTION, seed)
    rows, fitted = [], {}
    for name in variants:
        params = {"random_state": seed, "max_epochs": settings.max_epochs, **VARIANTS[name]}
        scoring = {k: params.pop(k) for k in SCORING_PARAMS if k in params}
        key = repr(sorted(params.items()))
        if key in fitted:                 # the same fit as an earlier variant's: scored differently
            model, pre_seconds, seconds = fitted[key]
            model = copy.deepcopy(model)
        else:
            pretrained, pre_seconds = timed(lambda: TrajMoERegressor(**params).fit(src_visits, pois=src_pois))
            model = copy.deepcopy(pretrained)
            _, seconds = timed(lambda: model.partial_fit(few, pois=t.pois))
            fitted[key] = (model, pre_seconds, seconds)
            model = copy.deepcopy(model)
        model.set_params(**scoring)
        out = score.rows(model, name, FRACTION, seed, seconds, pretrain_seconds=round(pre_seconds, 1))
        rows.extend(out)
        log(f"  seed {seed} {target:8s} {name:20s} acc@1 {out[0]['acc@1']:.4f}  mrr {out[0]['mrr']:.4f}  "
            f"({pre_seconds + seconds:.0f} s)", flush=True)
    for name, cls in (("history_frequency", HistoryFrequencyBaseline), ("markov", MarkovBaseline)):
        reference, seconds = timed(lambda: cls().fit(t.train, pois=t.pois))
        rows.extend(score.rows(reference, name, 1.0, seed, seconds))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the capped users and epochs of transfer.py --quick")
    parser.add_argument("--targets", type=city_list, default=",".join(TARGETS), help="comma-separated target cities")
    parser.add_argument("--seeds", type=seed_list, default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variants, or 'all' (default: QUICK_VARIANTS in quick mode, all otherwise)")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--max-epochs", type=positive_int, default=None)
    parser.add_argument("--jobs", type=positive_int, default=2, help="parallel processes (one torch thread each)")
    parser.add_argument("--target-pois", choices=TARGET_POIS, default="all",
                        help="the target's POI frame: the loader's, or only the venues all its training users "
                             "checked in at (as transfer.py; no effect on YJMob100K's POI counts per cell)")
    parser.add_argument("--data-home", default=None)
    parser.add_argument("--output", default=None, help="JSON results file (Markdown beside it)")
    args = parser.parse_args(argv)

    base = QUICK if args.quick else FULL
    settings = Settings(train_users=base.train_users, eval_users=base.eval_users, source_users=base.source_users,
                        max_epochs=args.max_epochs or base.max_epochs, baseline_epochs=None, fractions=(FRACTION,),
                        seeds=args.seeds, target_pois=args.target_pois)
    if args.variants is None:
        variants = QUICK_VARIANTS if args.quick else tuple(VARIANTS)
    else:
        variants = tuple(VARIANTS) if args.variants == "all" else tuple(args.variants.split(","))
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    targets = args.targets
    print(f"{'quick' if args.quick else 'full'} mode; {settings.describe()}")
    start = time.perf_counter()
    threads = 1 if args.jobs > 1 else None
    tasks = task_list(targets, settings.seeds)
    outs = Parallel(n_jobs=args.jobs, return_as="generator_unordered")(
        delayed(run_task)(target, seed, settings, variants, args.split, args.data_home, threads)
        for target, seed in tasks)
    results = collect(outs, len(tasks))
    wall = time.perf_counter() - start
    description = (f"{'Quick' if args.quick else 'Full'} mode, scored on {args.split} users. {settings.describe()}. "
                   f"Every variant pre-trained on the target's sources "
                   f"({'; '.join(f'{t} <- {chr(44).join(sources_of(t))}' for t in targets)}) and fine-tuned for one "
                   f"epoch on {FRACTION:.0%} of the target's training users; TrajMoE preset small (2 layers, d 64). "
                   f"Wall time {wall / 60:.1f} min.")
    margins = paired_margins(results, "trajmoe", FRACTION, [(v, FRACTION) for v in variants if v != "trajmoe"])
    text = (markdown_tables(results, "SAMoE ablations (transfer setting)", description)
            + "\n## The default model vs each variant (paired over seeds)\n\n"
            + (frame_markdown(margins) if len(margins) else "(only one variant run)") + "\n")
    print(text)
    if args.output:
        out = Path(args.output)
        write_json(out, {"benchmark": "ablation", "mode": "quick" if args.quick else "full", "split": args.split,
                         "settings": settings.describe(), "sources": {t: list(sources_of(t)) for t in targets},
                         "target_pois": settings.target_pois, "wall_seconds": round(wall, 1),
                         "environment": environment(), "results": results})
        out.with_suffix(".md").write_text(text)
        print(f"results: {out}, {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
