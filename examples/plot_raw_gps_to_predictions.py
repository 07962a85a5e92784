"""
From raw GPS fixes to predictions
=================================

Real users start from position fixes (a phone's GPS log: user, time, latitude, longitude), not
from a table of visits. This example takes the GeoLife GPS logs of Beijing, turns them into
visits with :class:`~trajmoe.preprocessing.StayPointDetector` (and says what became of every
fix), fine-tunes a TrajMoE pre-trained on Foursquare New York on them with ``partial_fit``, and
predicts where a GeoLife user the model never saw goes next, through one pipeline
``make_pipeline(StayPointDetector(...), TrajMoERegressor(...))`` that reads raw fixes
(:func:`trajmoe.pipeline.make_pipeline`: scikit-learn's pipeline plus ``partial_fit``). It also
reads the POIs of an OpenStreetMap extract with :func:`~trajmoe.datasets.read_osm_pois`.

**Which city, which data.** The GeoLife sample of the data folder is Beijing (plus one user's
train ride from Lanzhou to Kashgar, left out below); the only OpenStreetMap extract shipped is
Helsinki's. No data set here has GPS fixes and OSM POIs of the same city, and Helsinki's POIs
say nothing about Beijing's cells, so the example does not pair them: Beijing is fine-tuned
from its fixes **without POIs** (the model knows its cells by position and visit counts; the
POI expert sees empty cells), and the OSM reader is shown on Helsinki, producing the POI frame
that ``pois=`` takes. With an extract covering Beijing in the data home, one argument changes:
``pipe.partial_fit(fixes, trajmoeregressor__pois=read_osm_pois(path, city="beijing"))``.

**Small settings**, so that the page builds in well under a minute on 2 CPU cores (about 20
seconds): the GeoLife sample (5,040 fixes in Beijing of 4 users, at most 2 days each), a
TrajMoE pre-trained on 100 New York users for at most 3 epochs with training windows every 3
days (``stride_days=3``; the default is every day), then ONE fine-tuning epoch on the GeoLife
users but one. The fine-tuning data is a single 3-day window of one user and the held-out user
has 9 next visits to predict: the scores below show that the path works end to end, they do
not measure the model (the results page does). Set ``TRAJMOE_DATA`` to the data folder first.
"""

# %%
# Raw GPS fixes
# -------------
# :func:`~trajmoe.datasets.load_geolife` reads the GeoLife ``.plt`` files: one row per fix,
# times in Beijing local time, altitudes in metres, and the transport mode where the user
# labelled it (``mode_labelled``: fixes with a mode). User 010's fixes were logged on a train
# from Lanzhou to Kashgar, 1,200-3,400 km west of Beijing: fixes outside a box around Beijing
# (latitude 39.4-41.1, longitude 115.4-117.6 degrees) are dropped before anything else.
import copy

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from trajmoe import HistoryFrequencyBaseline, TrajMoERegressor
from trajmoe.datasets import fetch_osm_helsinki, load_foursquare_nyc, load_geolife, read_osm_pois
from trajmoe.metrics import evaluate
from trajmoe.pipeline import make_pipeline
from trajmoe.plotting import plot_prediction_map
from trajmoe.preprocessing import StayPointDetector

geolife = load_geolife()
fixes = geolife.fixes
print(fixes.groupby("user_id").agg(fixes=("lat", "size"), first=("tracked_at", "min"),
                                   last=("tracked_at", "max"),
                                   mode_labelled=("mode", "count")).to_string())

in_beijing = fixes["lat"].between(39.4, 41.1) & fixes["lon"].between(115.4, 117.6)
outside = sorted(fixes.loc[~in_beijing, "user_id"].unique())
print(f"{int((~in_beijing).sum()):,} fixes outside Beijing dropped (users {outside}); "
      f"{int(in_beijing.sum()):,} kept")
fixes = fixes[in_beijing]

# %%
# Fixes to visits
# ---------------
# A stay point is a run of one user's fixes within ``dist_threshold`` metres of its first fix
# for at least ``time_threshold`` minutes, without a gap of more than ``gap_threshold``
# minutes between two fixes (trackintel's sliding method). A day on a campus has short stops
# and indoor stretches without signal, hence 3 and 30 minutes rather than the defaults (5 and
# 15); ``include_last=True`` keeps each user's last stay. Every fix is accounted for: dropped
# (invalid or duplicate), merged into a stay point, or left out as movement; the detector
# states the counts in a DataWarning and keeps them in ``counts_``.
settings = dict(dist_threshold=100.0, time_threshold=3.0, gap_threshold=30.0,
                include_last=True, city="beijing", tz="Asia/Shanghai")
detector = StayPointDetector(**settings)
visits = detector.fit_transform(fixes)
print(pd.Series(detector.counts_).to_string())
print(visits.groupby("user_id").size().rename("visits").to_string())
print(visits[["user_id", "started_at", "finished_at", "lat", "lon", "n_fixes"]].head(5).to_string())

# %%
# Two users' fixes (dots) and their stay points (circles, area by the number of fixes merged):
# what the detector keeps of a day on the move.
fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
for color, user in zip(("C0", "C1"), ("000", "001")):
    f, v = fixes[fixes["user_id"] == user], visits[visits["user_id"] == user]
    ax.plot(f["lon"], f["lat"], ".", ms=1.5, color=color, alpha=0.4,
            label=f"user {user}: {len(f):,} fixes")
    ax.scatter(v["lon"], v["lat"], s=10 + 2 * v["n_fixes"], facecolors="none", edgecolors=color,
               linewidths=1.5, label=f"user {user}: {len(v)} stay points")
ax.set_aspect(1 / np.cos(np.radians(40.0)))   # a metre east as long as a metre north
ax.set_xlabel("longitude (degrees)")
ax.set_ylabel("latitude (degrees)")
ax.legend(loc="lower right", fontsize=8)

# %%
# POIs from OpenStreetMap
# -----------------------
# :func:`~trajmoe.datasets.read_osm_pois` maps every OSM tag onto the library's functional
# taxonomy (``amenity=restaurant`` -> ``restaurant``) and reports the tags it does not map.
# These are Helsinki's POIs: they show the reader and are not used for Beijing (see the top of
# the page). The New York model below learned its POI features from Foursquare venues mapped
# onto the same taxonomy, so OSM POIs of a new city mean the same to it.
pois = read_osm_pois(fetch_osm_helsinki(), city="helsinki")
print(f"{len(pois):,} POIs in Helsinki, {pois['category'].nunique()} taxonomy categories")
print(pois.groupby("category").size().nlargest(8).to_string())
print(pois[["name", "source_category", "category"]].dropna().drop_duplicates("category")
      .head(5).to_string())
# With an extract covering Beijing (any .osm.pbf of the city), the fine-tuning below would read
#     beijing_pois = read_osm_pois("beijing.osm.pbf", city="beijing")
# and pass trajmoeregressor__pois=beijing_pois to the pipeline's partial_fit.

# %%
# Pre-train in New York, fine-tune in Beijing from raw fixes
# ----------------------------------------------------------
# The network learns on the check-ins of 100 New York users and the city's venues. The
# pipeline puts the stay point detector in front of it, so that it reads raw fixes.
# scikit-learn's ``Pipeline`` has no ``partial_fit``; :func:`trajmoe.pipeline.make_pipeline`
# builds one that has: ``pipe.partial_fit(fixes)`` runs the detector on the fixes and fine-tunes
# the model on the visits it finds (one epoch, on every GeoLife user but 000, who is held out),
# which registers Beijing as a new city of the model.
nyc = load_foursquare_nyc()
users = np.random.default_rng(0).choice(nyc.visits["user_id"].unique(), size=100, replace=False)
pretrained = TrajMoERegressor(max_epochs=3, stride_days=3, random_state=0).fit(
    nyc.visits[nyc.visits["user_id"].isin(users)], pois=nyc.pois)

finetune_fixes = fixes[fixes["user_id"] != "000"]
test_fixes = fixes[fixes["user_id"] == "000"]
pipe = make_pipeline(StayPointDetector(**settings), copy.deepcopy(pretrained))
pipe.partial_fit(finetune_fixes)
print(f"fine-tuned on {pipe[0].n_staypoints_} visits of {pipe[0].counts_['n_users']} users; "
      f"cities of the model: {pipe[-1].cities_}")

# %%
# Predictions from raw fixes
# --------------------------
# ``pipe.predict`` runs the detector on the held-out user's fixes and predicts the next cell
# (``"<city>:<ix>_<iy>"`` on the 500 m grid) after each of the visits it finds.
test_visits = pipe[0].transform(test_fixes)
predicted = pipe.predict(test_fixes)
print(test_visits[["started_at", "lat", "lon"]].assign(predicted_next_cell=predicted).to_string())

# %%
# How the held-out user's next cells rank, for the fine-tuned network, for the same network
# before fine-tuning (Beijing then is a city it has never seen: scored zero-shot, its
# candidates the cells around the user's own visits) and for history frequency (the cells of
# the user's window so far by visits and recency, then by their popularity in the fine-tuning
# visits). Nine targets: one target is 0.11 of Acc@1, so the rows differ by noise; the point is
# that raw fixes go in and ranked cells come out.
rows = {
    "TrajMoE, pre-trained only (zero-shot)": evaluate(pretrained, test_visits),
    "TrajMoE, pre-trained + 1 epoch on GeoLife": evaluate(pipe[-1], test_visits),
    "history frequency": evaluate(
        HistoryFrequencyBaseline().fit(pipe[0].transform(finetune_fixes)), test_visits),
}
table = pd.DataFrame(rows).T[["acc@1", "acc@5", "mrr", "n_targets"]]
print(table.astype({"n_targets": int}).round(3).to_string())

# %%
# One prediction on the grid
# --------------------------
# The held-out user's window up to the last of its visits that has a next one, the five best
# cells after it and the cell the user went to next, on Beijing's 500 m grid (shade: the
# fine-tuning visits per cell).
fig, ax = plot_prediction_map(pipe[-1], test_visits, k=5)
