"""
Model selection with city-grouped splits
========================================

A next-location model is used in a city it was not trained on, or barely: choose its settings
the same way. :class:`~trajmoe.model_selection.FewShotCitySplit` is a scikit-learn splitter
whose training part is every visit of the source cities plus a few users of the target city,
and whose test part is the target city's OTHER users, so no user is ever on both sides and the
score says how well the model transfers. It plugs into ``GridSearchCV`` like any ``cv=``;
:func:`~trajmoe.model_selection.cross_city_validate` runs the full protocol (pre-train on the
sources, fine-tune on the few target users, score the held-out target users) for a fair
comparison of models.

**Small settings**, so that the page builds in about a minute on 2 CPU cores: 300 users each of
Foursquare Singapore and Foursquare New York, 3 random splits in the grid search, one split in
the comparison, and a TrajMoE of at most 3 pre-training epochs with training windows every
3 days (``stride_days=3``; the default is every day). Set ``TRAJMOE_DATA`` to the data folder
first.
"""

# %%
# Two cities, one visit frame
# ---------------------------
import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV

from trajmoe import GravityBaseline, HistoryFrequencyBaseline, MarkovBaseline, TrajMoERegressor
from trajmoe.datasets import load_foursquare_nyc, load_foursquare_singapore
from trajmoe.metrics import get_scorer
from trajmoe.model_selection import FewShotCitySplit, cross_city_validate

nyc = load_foursquare_nyc()
singapore = load_foursquare_singapore()
rng = np.random.default_rng(0)
visits = []
for bunch in (nyc, singapore):
    users = rng.choice(bunch.visits["user_id"].unique(), size=300, replace=False)
    visits.append(bunch.visits[bunch.visits["user_id"].isin(users)])
X = pd.concat(visits, ignore_index=True)
print(X.groupby("city")["user_id"].nunique())

# %%
# A grid search scored on held-out users of the target city
# ---------------------------------------------------------
# The gravity model ranks cells by popularity x (distance + offset)^-beta from the current cell.
# Here ``beta`` (no unit) and ``offset`` (metres) are chosen by Acc@1 on New York's held-out
# users, training on Singapore plus 10 % of New York's other users, over three random draws of
# those users.
cv = FewShotCitySplit("nyc", fraction=0.10, n_splits=3, random_state=0)
search = GridSearchCV(GravityBaseline(), {"beta": [0.5, 1.0, 2.0, 3.0], "offset": [100.0, 500.0]},
                      scoring=get_scorer("acc@1"), cv=cv)
search.fit(X)
table = pd.DataFrame(search.cv_results_)[["param_beta", "param_offset", "mean_test_score", "std_test_score"]]
print(table.sort_values("mean_test_score", ascending=False).round(3).to_string(index=False))
print("best:", search.best_params_)

# %%
# Acc@1 of every setting (mean over the three draws; error bars: one standard deviation).
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
for offset, part in table.groupby("param_offset"):
    ax.errorbar(part["param_beta"].astype(float), part["mean_test_score"], yerr=part["std_test_score"],
                marker="o", capsize=3, label=f"offset {offset:g} m")
ax.set_xlabel("distance decay beta")
ax.set_ylabel("Acc@1, held-out New York users")
ax.legend()

# %%
# The transfer protocol, model against model
# ------------------------------------------
# For each target city: fit on the other city, ``partial_fit`` on 10 % of the target's
# training users (one epoch for TrajMoE; the counting models add the users' visits), score the
# target's held-out users. Every model sees the same users (same ``random_state``).
models = {"TrajMoE": TrajMoERegressor(max_epochs=3, stride_days=3, random_state=0),
          "gravity (chosen above)": GravityBaseline(**search.best_params_),
          "history frequency": HistoryFrequencyBaseline(), "Markov": MarkovBaseline()}
reports = []
for name, estimator in models.items():
    report = cross_city_validate(estimator, X, target_cities=["nyc"], fraction=0.10,
                                 scoring=("acc@1", "acc@5", "mrr"), random_state=0)
    reports.append(report.assign(model=name))
reports = pd.concat(reports, ignore_index=True)
print(reports[["model", "target_city", "n_finetune_users", "n_test_users", "acc@1", "acc@5", "mrr"]]
      .round(3).to_string(index=False))
