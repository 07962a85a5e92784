"""
Few-shot transfer to a new city
===============================

Pre-train TrajMoE on Foursquare Singapore and the four Flickr cities, fine-tune it for ONE
epoch on 5 % of the users of Foursquare New York, and compare its next-location ranking on
held-out New York users with the history-frequency baseline.

Runs in a few minutes on 2 CPU cores; set ``TRAJMOE_DATA`` to the data folder first.
"""

# %%
# Load real data in the canonical visit schema (one row per check-in).
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trajmoe import HistoryFrequencyBaseline, TrajMoERegressor
from trajmoe.datasets import load_flickr, load_foursquare_nyc, load_foursquare_singapore
from trajmoe.metrics import evaluate
from trajmoe.model_selection import train_test_users

sources = [load_foursquare_singapore()] + [load_flickr(c) for c in ("Edinburgh", "Melbourne", "Osaka", "Toronto")]
source_visits = pd.concat([b.visits for b in sources], ignore_index=True)
source_pois = pd.concat([b.pois for b in sources if b.pois is not None], ignore_index=True)
nyc = load_foursquare_nyc()

# %%
# Split New York by users: a random 5 % of the training users fine-tune, test users score.
train_idx, val_idx, test_idx = train_test_users(nyc.visits, random_state=0)
train, test = nyc.visits.iloc[train_idx], nyc.visits.iloc[test_idx]
rng = np.random.default_rng(0)
users = train["user_id"].unique()
few = rng.choice(users, size=round(0.05 * len(users)), replace=False)
target_5pct = train[train["user_id"].isin(few)]

# %%
# Pre-train on the sources, then one epoch on the 5 %.
model = TrajMoERegressor(max_epochs=6, random_state=0)
model.fit(source_visits, pois=source_pois).partial_fit(target_5pct, pois=nyc.pois)
print(model.predict(test.head()))            # next cell after each visit, e.g. 'nyc:1171_9024'

baseline = HistoryFrequencyBaseline().fit(train, pois=nyc.pois)
reports = {"TrajMoE (5 %, 1 epoch)": evaluate(model, test), "history frequency": evaluate(baseline, test)}

# %%
# Acc@k of both models (full ranking over all New York cells, every position).
ks = (1, 3, 5, 10)
for name, report in reports.items():
    plt.plot(ks, [report[f"acc@{k}"] for k in ks], marker="o", label=name)
plt.xlabel("k")
plt.ylabel("Acc@k on held-out New York users")
plt.legend()
plt.show()
