"""
Few-shot transfer to a new city
===============================

Pre-train TrajMoE on Foursquare New York, fine-tune it for ONE epoch on a few percent of the
users of Foursquare Singapore, and compare its next-location ranking on held-out Singapore users
with two baselines fitted on all Singapore training users. Then look at one prediction on the
city's grid.

**Small settings**, so that the page builds in about a minute on 2 CPU cores: 100 New York users,
at most 3 pre-training epochs, training windows every 3 days (``stride_days=3``; the default is
every day), fine-tuning fractions of 5, 10 and 20 % with two seeds each. The numbers are therefore
noisy and below those of the results page, which uses every user and up to 50 epochs. Singapore's
check-ins are sparse: only windows of 3 days with at least 5 check-ins are trained on and scored,
so a few percent of its users amount to a handful of windows. Set ``TRAJMOE_DATA`` to the data
folder first.
"""

# %%
# Real data in the canonical visit schema (one row per check-in)
# --------------------------------------------------------------
import copy

import numpy as np
import pandas as pd

from trajmoe import HistoryFrequencyBaseline, MarkovBaseline, TrajMoERegressor
from trajmoe.datasets import load_foursquare_nyc, load_foursquare_singapore
from trajmoe.metrics import evaluate
from trajmoe.model_selection import FewShotCitySplit, train_test_users
from trajmoe.plotting import plot_prediction_map, plot_transfer_curve

nyc = load_foursquare_nyc()
singapore = load_foursquare_singapore()
rng = np.random.default_rng(0)
source_users = rng.choice(nyc.visits["user_id"].unique(), size=100, replace=False)
source = nyc.visits[nyc.visits["user_id"].isin(source_users)]

# Singapore's users split 70/10/20 (by user): training users to sample from, test users to score.
train_idx, _, test_idx = train_test_users(singapore.visits, random_state=0)
train, test = singapore.visits.iloc[train_idx], singapore.visits.iloc[test_idx]
print(f"source: {source['user_id'].nunique()} New York users, {len(source)} visits; Singapore: "
      f"{train['user_id'].nunique()} training users, {test['user_id'].nunique()} test users")

# %%
# Pre-train once, fine-tune one epoch per fraction of Singapore's training users
# ------------------------------------------------------------------------------
# Singapore is not in pre-training: the network meets it only through its cells' features.
# Each copy of the pre-trained model is fine-tuned on a random sample of users
# (:class:`~trajmoe.model_selection.FewShotCitySplit` draws them, one seed per sample).
pretrained = TrajMoERegressor(max_epochs=3, stride_days=3, random_state=0).fit(source, pois=nyc.pois)

rows = []
for fraction in (0.05, 0.10, 0.20):
    for seed in (0, 1):
        sample = FewShotCitySplit("singapore", fraction=fraction, random_state=seed).finetune_samples(train)
        model = copy.deepcopy(pretrained).partial_fit(train.iloc[next(sample)])
        rows.append({"model": "TrajMoE", "target_city": "singapore", "fraction": fraction, "seed": seed,
                     **evaluate(model, test)})
for name, baseline in (("history frequency", HistoryFrequencyBaseline()), ("Markov", MarkovBaseline())):
    rows.append({"model": name, "target_city": "singapore", "fraction": 1.0, "seed": 0,
                 **evaluate(baseline.fit(train), test)})
results = pd.DataFrame(rows)
print(results.groupby(["model", "fraction"])[["acc@1", "acc@5", "mrr", "n_targets"]].mean().round(3))

# %%
# Acc@1 against the share of Singapore's users used for fine-tuning
# -----------------------------------------------------------------
# Full ranking over every Singapore cell, every position of the test windows; error bars: one
# standard deviation over the two seeds. The baselines use all training users (dashed lines).
fig, axes = plot_transfer_curve(results, curve="TrajMoE", label="TrajMoE, pre-trained + 1 epoch",
                                references={"history frequency": {"color": "0.4"},
                                            "Markov": {"color": "C2", "linestyle": ":"}})

# %%
# One prediction on the grid
# --------------------------
# The last fine-tuned model (20 %, seed 1) after one visit of a Singapore test user: the
# window so far, the five best cells and the cell the user actually went to next.
fig, ax = plot_prediction_map(model, test, k=5)
