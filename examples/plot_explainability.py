"""
Which expert does the router trust, where and when?
===================================================

TrajMoE's SAMoE blocks hold three specialist experts, one per family of location features
(POI semantics, geography, popularity), and a router (STAR) that mixes them into the
trajectory stream with weights that sum to 1 at every visit. Its inputs are the hidden state
of the trajectory (where the user is, what the cells around offer) and the time embedding
(hour, weekday, gap), so the mix can differ between cities and hours of the day: the paper's
explainability figure. :meth:`~trajmoe.TrajMoERegressor.gate_shares` reads those weights on
held-out visits and :func:`~trajmoe.plotting.plot_gate_shares` draws them.

**Small settings**, so that the page builds in about a minute on 2 CPU cores: one model trained
jointly on 100 users of Foursquare Singapore and 100 of Foursquare New York, at most 3 epochs,
training windows every 3 days (``stride_days=3``; the default is every day). A model this
small and this briefly trained mixes its experts close to evenly (about 1/3 each); the
differences between cities and hours grow with training. Set ``TRAJMOE_DATA`` to the data
folder first.
"""

# %%
# Two cities, users split into training and held-out users
# --------------------------------------------------------
import numpy as np
import pandas as pd

from trajmoe import TrajMoERegressor
from trajmoe.datasets import load_foursquare_nyc, load_foursquare_singapore
from trajmoe.model_selection import train_test_users
from trajmoe.plotting import plot_gate_shares, plot_prediction_map

nyc = load_foursquare_nyc()
singapore = load_foursquare_singapore()
rng = np.random.default_rng(0)
visits = []
for bunch in (nyc, singapore):
    users = rng.choice(bunch.visits["user_id"].unique(), size=100, replace=False)
    visits.append(bunch.visits[bunch.visits["user_id"].isin(users)])
visits = pd.concat(visits, ignore_index=True)

train_idx, _, test_idx = train_test_users(visits, random_state=0)   # by user, within each city
train, test = visits.iloc[train_idx], visits.iloc[test_idx]
model = TrajMoERegressor(max_epochs=3, stride_days=3, random_state=0).fit(train, pois=nyc.pois)

# %%
# Gate shares by city and local hour
# ----------------------------------
# One row per (city, hour, expert): the mean gate weight of the expert over the held-out
# visits that started in that hour (local time), and how many visits that is.
shares = model.gate_shares(test)
print(shares.pivot_table(index="city", columns="expert", values="share").round(3))
print(shares.head(6))

# %%
# Left: each expert's share of a city's held-out visits. Right: the same by hour of day, one
# panel per city (hours without a held-out visit are skipped).
fig, axes = plot_gate_shares(shares)

# %%
# What the model does with it
# ---------------------------
# The five best cells after one visit of a held-out New York user, on New York's 500 m grid.
fig, ax = plot_prediction_map(model, test[test["city"] == "nyc"], k=5)
