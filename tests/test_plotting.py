"""Pictures (trajmoe.plotting) and the router's gate shares, drawn headless (Agg) on real data.

Each test checks what was drawn: the number of patches and lines, their data in the plot's
units (metres, hours, percent), the labels; not only that a figure came back.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trajmoe import HistoryFrequencyBaseline, TrajMoERegressor  # noqa: E402
from trajmoe.datasets import load_flickr, load_foursquare_nyc, load_foursquare_singapore  # noqa: E402
from trajmoe.encoder import cell_labels  # noqa: E402
from trajmoe.exceptions import DataWarning  # noqa: E402
from trajmoe.plotting import plot_gate_shares, plot_prediction_map, plot_transfer_curve  # noqa: E402
from trajmoe.schema import validate_visits  # noqa: E402
from trajmoe.sequences import time_features  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::trajmoe.exceptions.DataWarning")

#: A tiny network on two small cities (Singapore: 4,400 cells; Melbourne: 730), so training is quick.
TINY = dict(d_model=16, n_layers=1, n_heads=2, max_epochs=1, min_stays=2, stride_days=3, random_state=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _first_users(visits, n):
    return visits[visits["user_id"].isin(visits["user_id"].unique()[:n])]


@pytest.fixture(scope="module")
def nyc_small(data_home):
    nyc = load_foursquare_nyc(data_home=data_home)
    return _first_users(nyc.visits, 40), nyc.pois


@pytest.fixture(scope="module")
def two_cities(data_home):
    singapore = _first_users(load_foursquare_singapore(data_home=data_home).visits, 30)
    melbourne = _first_users(load_flickr("Melbourne", data_home=data_home).visits, 60)
    return pd.concat([singapore, melbourne], ignore_index=True)


@pytest.fixture(scope="module")
def tiny_model(two_cities):
    return TrajMoERegressor(**TINY).fit(two_cities)


@pytest.fixture(scope="module")
def shares(tiny_model, two_cities):
    return tiny_model.gate_shares(two_cities)


# ----------------------------------------------------------------------------- optional dependency
def test_module_imports_without_loading_matplotlib():
    code = "import sys, trajmoe.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_matplotlib_names_the_plot_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    frame = pd.DataFrame({"city": ["a"], "hour": [0], "expert": ["poi"], "share": [1.0]})
    with pytest.raises(ImportError, match=r"trajmoe\[plot\]"):
        plot_gate_shares(frame)


# ----------------------------------------------------------------------------- gate shares
def test_gate_shares_by_city_and_hour(tiny_model, two_cities, shares):
    assert list(shares.columns) == ["city", "hour", "expert", "share", "n_visits"]
    assert set(shares["city"]) == {"melbourne", "singapore"}
    assert shares["hour"].between(0, 23).all() and shares["hour"].dtype == np.int64
    assert shares.groupby(["city", "hour"])["expert"].agg(tuple).map(lambda t: t == ("poi", "geo", "pop")).all()
    assert shares["share"].between(0, 1).all()
    np.testing.assert_allclose(shares.groupby(["city", "hour"])["share"].sum(), 1.0, atol=1e-5)
    # every visit is counted once, at its local hour
    visits = validate_visits(two_cities)
    hours = pd.DataFrame({"city": visits["city"].astype(str).to_numpy(),
                          "hour": time_features(visits)["slot"].to_numpy() // 2})
    expected = hours.value_counts().sort_index()
    got = shares[shares["expert"] == "poi"].set_index(["city", "hour"])["n_visits"].sort_index()
    pd.testing.assert_series_equal(got, expected, check_names=False)
    # the hook that read the router is gone: nothing captured by later forward passes
    assert not tiny_model.net_.module_.blocks[0].router._forward_hooks


def test_gate_shares_match_the_router_output(tiny_model, two_cities):
    """The mean of the network's own last-layer gates (forward output) over a city's visits."""
    visits = two_cities[two_cities["city"] == "melbourne"]
    shares = tiny_model.gate_shares(visits, layer=0)
    with tiny_model._unseen_cells(visits):
        prep, windows = tiny_model._visit_windows(visits)
        gates = []
        for c, b, width, batch, valid in tiny_model._iter_batches(windows):
            gates.append(tiny_model._forward(batch, tiny_model.cities_[c])["gates"].numpy()[valid])
    overall = np.concatenate(gates).mean(axis=0)
    weighted = shares.pivot_table(index="hour", columns="expert", values="share").mul(
        shares[shares["expert"] == "poi"].set_index("hour")["n_visits"], axis=0).sum() / len(visits)
    np.testing.assert_allclose(weighted[["poi", "geo", "pop"]].to_numpy(), overall, rtol=1e-5)


@pytest.mark.parametrize("layer", [1, -2, 0.0, True, "last"])
def test_gate_shares_rejects_bad_layer(tiny_model, two_cities, layer):
    with pytest.raises(ValueError, match="layer must be an int"):
        tiny_model.gate_shares(two_cities, layer=layer)


def test_gate_shares_without_router(two_cities):
    melbourne = two_cities[two_cities["city"] == "melbourne"]
    model = TrajMoERegressor(**{**TINY, "experts": False}).fit(melbourne)
    with pytest.raises(ValueError, match="no router"):
        model.gate_shares(melbourne)


def test_gate_shares_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TrajMoERegressor().gate_shares(pd.DataFrame({"user_id": [1], "day": [0], "slot": [0], "x": [0], "y": [0]}))


def test_plot_gate_shares_draws_bars_and_hourly_lines(shares):
    fig, axes = plot_gate_shares(shares)
    assert len(axes) == 3 and all(ax.figure is fig for ax in axes)
    bars = axes[0].patches
    assert len(bars) == 3 * 2                       # experts x cities
    first = shares[shares["city"] == "melbourne"]
    for e, expert in enumerate(("poi", "geo", "pop")):
        part = first[first["expert"] == expert]
        assert bars[2 * e].get_height() == pytest.approx(np.average(part["share"], weights=part["n_visits"]))
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["POI expert", "Geo expert", "Pop expert"]
    assert [ax.get_title() for ax in axes[1:]] == ["melbourne", "singapore"]
    lines = axes[2].lines
    assert len(lines) == 3
    part = shares[(shares["city"] == "singapore") & (shares["expert"] == "geo")]
    np.testing.assert_array_equal(lines[1].get_xdata(), part["hour"].to_numpy())
    np.testing.assert_allclose(lines[1].get_ydata(), part["share"].to_numpy())
    assert axes[1].get_xlabel() == "hour of day (local)"


def test_plot_gate_shares_checks_its_input():
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_gate_shares(pd.DataFrame({"city": ["a"], "share": [1.0]}))
    frame = pd.DataFrame({"city": ["a", "a"], "hour": [3, 3], "expert": ["poi", "geo"], "share": [0.25, 0.75]})
    with pytest.raises(ValueError, match="1 \\+ n_cities = 2"):
        plot_gate_shares(frame, axes=[plt.gca()])
    fig, axes = plot_gate_shares(frame)             # no n_visits: hours count equally
    assert [p.get_height() for p in axes[0].patches] == [0.25, 0.75]
    with pytest.raises(ValueError, match=r"2 rows that repeat a \(city, hour, expert\) at rows \[0, 2\]"):
        plot_gate_shares(pd.concat([frame, frame.head(1)], ignore_index=True))


# ----------------------------------------------------------------------------- prediction map
@pytest.fixture(scope="module")
def counting_model(nyc_small):
    visits, pois = nyc_small
    return HistoryFrequencyBaseline().fit(visits, pois=pois)


def test_prediction_map_draws_window_topk_and_truth(counting_model, nyc_small):
    visits = nyc_small[0]
    for user in visits["user_id"].unique():          # a user with a window of at least 5 visits
        rows = visits[visits["user_id"] == user]
        prep, windows = counting_model._visit_windows(rows)
        long = np.flatnonzero((windows.row >= 0).sum(axis=1) >= 5)
        if len(long):
            break
    positions = prep.order[windows.row[long[0], :5]]  # rows' positions of the window's first 5 visits
    visit = rows.index[positions[3]]
    k = 4
    fig, ax = plot_prediction_map(counting_model, visits, visit=visit, k=k)
    assert ax.figure is fig
    assert len(ax.patches) == k + 1                  # top-k squares, then the true next cell
    table = counting_model.encoder_.cities_["nyc"]
    grid, size = table.grid, table.grid.cell_size
    located = counting_model.encoder_.locate(validate_visits(rows.iloc[positions]))
    cells = located[["ix", "iy"]].to_numpy()
    centre = grid.centroid_metres(cells[:, 0], cells[:, 1])
    rel = centre - centre[3]
    # the window line runs through the visits so far, ending at the current cell (0, 0)
    np.testing.assert_allclose(ax.lines[0].get_xydata(), rel[:4])
    # squares of cell_size metres at the predicted cells, in rank order
    labels = counting_model.predict_topk(rows, k=k)[0][positions[3]]
    for patch, label in zip(ax.patches[:k], labels):
        ix, iy = (int(v) for v in label.split(":")[1].split("_"))
        x, y = grid.centroid_metres([ix], [iy])[0] - centre[3]
        assert patch.get_width() == patch.get_height() == size
        assert patch.get_xy() == pytest.approx((x - size / 2, y - size / 2))
    truth = ax.patches[-1]
    assert truth.get_xy() == pytest.approx((rel[4, 0] - size / 2, rel[4, 1] - size / 2))
    assert truth.get_label() == "true next cell"
    hit = cell_labels("nyc", [cells[4, 0]], [cells[4, 1]])[0]
    expected = (f"ranked {list(labels).index(hit) + 1}" if hit in labels else f"not in the top {k}")
    assert expected in ax.get_title()
    assert ax.get_xlabel() == "east of the current cell (m)"
    assert ax.collections and len(ax.collections[0].get_paths()) > 0   # the city's cells
    assert ax.lines[0].get_label() == "window so far (4 visits)"
    _, ax = plot_prediction_map(counting_model, visits, visit=visit, k=k, n_history=2)
    np.testing.assert_allclose(ax.lines[0].get_xydata(), rel[2:4])
    assert ax.lines[0].get_label() == "last 2 of the window's 4 visits"


def test_prediction_map_default_visit_and_given_axes(counting_model, nyc_small):
    fig, given = plt.subplots()
    out_fig, ax = plot_prediction_map(counting_model, nyc_small[0], k=2, ax=given)
    assert ax is given and out_fig is fig
    assert len(ax.patches) == 3                      # the default visit has a next visit
    # an index with repeated labels (frames of two cities concatenated) still has a default visit
    _, same = plot_prediction_map(counting_model, nyc_small[0].set_axis(np.zeros(len(nyc_small[0]), int)), k=2)
    assert [p.get_xy() for p in same.patches] == [p.get_xy() for p in ax.patches]


def test_prediction_map_errors(counting_model, nyc_small):
    visits = nyc_small[0]
    with pytest.raises(KeyError, match="exactly one row"):
        plot_prediction_map(counting_model, visits, visit="no such row")
    with pytest.raises(ValueError, match="k must be"):
        plot_prediction_map(counting_model, visits, visit=visits.index[0], k=0)
    with pytest.raises(ValueError, match="n_history"):
        plot_prediction_map(counting_model, visits, visit=visits.index[0], n_history=0)
    for bad in (-1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="margin must be a finite number of metres >= 0"):
            plot_prediction_map(counting_model, visits, visit=visits.index[0], margin=bad)


# ----------------------------------------------------------------------------- transfer curve
def _rows():
    rows = []
    for city in ("nyc", "yjmob_A"):
        for fraction, values in ((0.05, (0.10, 0.20)), (0.10, (0.30, 0.40))):
            rows += [{"model": "trajmoe_finetuned", "target_city": city, "fraction": fraction, "seed": s,
                      "protocol": p, "acc@1": v if p == "all" else 0.9} for s, v in enumerate(values)
                     for p in ("all", "last")]
        rows += [{"model": "markov", "target_city": city, "fraction": 1.0, "seed": s, "protocol": "all",
                  "acc@1": v} for s, v in enumerate((0.05, 0.15))]
    return rows


def test_transfer_curve_means_errorbars_and_references():
    fig, axes = plot_transfer_curve(_rows(), curve="trajmoe_finetuned", label="TrajMoE",
                                    references={"markov": {"label": "Markov", "color": "k"}})
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["nyc", "yjmob_A"]
    curve, reference = axes[0].lines[0], axes[0].lines[-1]
    np.testing.assert_allclose(curve.get_xdata(), [5.0, 10.0])
    np.testing.assert_allclose(curve.get_ydata(), [0.15, 0.35])           # protocol "all" only
    np.testing.assert_allclose(reference.get_ydata(), [0.10, 0.10])
    assert reference.get_label() == "Markov"
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["Markov", "TrajMoE"]
    assert axes[0].get_xlabel() == "share of the target city's training users (%)"
    assert axes[0].get_ylabel() == "acc@1 (all positions)"
    # error bars: one standard deviation of the seeds
    segments = axes[0].collections[0].get_segments()
    np.testing.assert_allclose([np.ptp(s[:, 1]) / 2 for s in segments], [np.std([0.1, 0.2], ddof=1)] * 2)


def test_transfer_curve_without_model_column_and_errors():
    frame = pd.DataFrame({"target_city": ["nyc", "nyc"], "fraction": [0.01, 0.05], "mrr": [0.2, 0.3]})
    fig, axes = plot_transfer_curve(frame, metric="mrr")
    references = [line for line in axes[0].lines if not line.get_label().startswith("_")]
    assert len(axes) == 1 and references == []
    assert axes[0].get_ylabel() == "mrr"                                    # no protocol column
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), [0.2, 0.3])
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_transfer_curve(frame, metric="acc@1")
    with pytest.raises(ValueError, match="not a model"):
        plot_transfer_curve(_rows(), curve="nope")
    with pytest.raises(ValueError, match="no row"):
        plot_transfer_curve(_rows(), protocol="none")
    with pytest.raises(ValueError, match=r"'fraction' has 1 value\(s\) of the curve model 'model' outside \(0, 1\] "
                                         r"at rows \[1\]: give the share"):
        plot_transfer_curve(frame.assign(fraction=[0.01, 5.0]), metric="mrr")     # 5 %, as a percent
    with pytest.warns(DataWarning, match=r"1 row\(s\) without a 'mrr' value, left out of the means: rows \[0\]"):
        _, axes = plot_transfer_curve(frame.assign(mrr=[np.nan, 0.3]), metric="mrr")
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), [np.nan, 0.3])
