"""The catalogue of bad inputs: every entry is an input a real user writes, with its handling.

Each entry names the call it goes through and what must happen: a documented error (its class and
a message that names the column, the rows and the fix), a ``DataWarning`` with counts (the call
then succeeds), or acceptance (the input is read correctly). For every entry the caller's frames are
never modified, and an error is always raised by trajmoe itself (never a raw pandas, numpy, pyproj
or torch exception from deep inside). ``docs/bad_inputs.rst`` lists the same entries (checked
below), so the page and the tests cannot drift apart.
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from trajmoe import HistoryFrequencyBaseline, MarkovBaseline, PopularityBaseline, SpatialSemanticEncoder
from trajmoe.exceptions import DataWarning, SchemaError, UnknownCityError
from trajmoe.preprocessing import ShortUserFilter
from trajmoe.schema import validate_pois, validate_visits
from trajmoe.taxonomy import TAXONOMY

DOCS = Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.rst"
PACKAGE = Path(__file__).resolve().parent.parent / "trajmoe"


# ---------------------------------------------------------------------------------- frames
def grid(n_users=3, n=12, **cols):
    """Binned, gridded visits (YJMob100K form)."""
    X = pd.DataFrame([dict(user_id=u, day=i // 6, slot=(i * 7) % 48, x=u + i % 4, y=i % 3)
                      for u in range(n_users) for i in range(n)])
    return X.assign(**cols)


def nyc(n_users=3, n=12, tz="America/New_York"):
    """Tz-aware lat/lon visits in New York, one every three hours."""
    t0 = pd.Timestamp("2020-01-06 08:00", tz=tz)
    return pd.DataFrame([dict(user_id=u, started_at=t0 + pd.Timedelta(hours=3 * i),
                              lat=40.70 + 0.01 * (i % 4), lon=-74.00 + 0.01 * u)
                         for u in range(n_users) for i in range(n)])


def naive_strings():
    return nyc().assign(started_at=lambda d: d.started_at.dt.tz_localize(None).astype(str))


def put(X, col, rows, value):
    """X with ``value`` at ``rows`` of ``col`` (the column widened to object/float as needed)."""
    X = X.copy()
    if isinstance(value, str) or value is None or isinstance(value, pd.Timestamp):
        X[col] = X[col].astype(object)
    elif isinstance(value, float) and not pd.api.types.is_float_dtype(X[col]):
        X[col] = X[col].astype(float)
    for row in np.atleast_1d(rows):
        X.at[row, col] = value
    return X


def pois(**cols):
    return pd.DataFrame({"lat": [40.70, 40.71, 40.72], "lon": [-74.0, -73.99, -73.98],
                         "category": list(TAXONOMY[:3]), "count": [1, 2, 3]}).assign(**cols)


def arrow(X, tz):
    pa = pytest.importorskip("pyarrow")
    times = X["started_at"] if tz else X["started_at"].dt.tz_localize(None)
    return X.assign(started_at=times.astype(pd.ArrowDtype(pa.timestamp("ns", tz=tz))))


# ------------------------------------------------------------------------------------ calls
def fit_encoder(X, P=None):
    return SpatialSemanticEncoder().fit(X, pois=P)


def fit_predict(X):
    return MarkovBaseline(min_stays=2).fit(X).predict(X)


def predict_with(model, X):
    return model.predict(X)


# ------------------------------------------------------------------- GPS fixes, pipelines
def fixes(n_users=2, n=40, tz="Asia/Shanghai"):
    """Raw GPS fixes in Beijing: each user stays 10 minutes at each of 4 places, a fix a minute."""
    pytest.importorskip("trackintel")
    t0 = pd.Timestamp("2009-01-05 08:00", tz=tz)
    return pd.DataFrame([dict(user_id=u, tracked_at=t0 + pd.Timedelta(minutes=i),
                              lat=39.9 + 0.01 * (i // 10) + 0.001 * u, lon=116.4 + 0.01 * (i // 10))
                         for u in range(n_users) for i in range(n)])


def detect(X, **params):
    from trajmoe.preprocessing import StayPointDetector

    return StayPointDetector(**params).fit_transform(X)


def make_pipeline(*steps):
    from trajmoe.pipeline import make_pipeline

    return make_pipeline(*steps)


def localize(X):
    from trajmoe.preprocessing import CityTimeZoneLocalizer

    return CityTimeZoneLocalizer("America/New_York").fit_transform(X)


def gps_pipeline():
    from trajmoe.preprocessing import StayPointDetector

    return make_pipeline(StayPointDetector(include_last=True), MarkovBaseline(min_stays=2))


def partial_fit_with(**params):
    return lambda X: gps_pipeline().partial_fit(X, **params)


# ------------------------------------------------------------------------- files, plots
def scratch():
    """A new folder, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="trajmoe-bad-input-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def osm_file(content):
    """An .osm.pbf path holding ``content`` (bytes), or a folder of that name (None)."""
    pytest.importorskip("osmium")
    path = scratch() / "broken.osm.pbf"
    path.mkdir() if content is None else path.write_bytes(content)
    return path


def truncated_osm():
    from trajmoe.datasets import fetch_osm_helsinki

    return osm_file(fetch_osm_helsinki(download=False).read_bytes()[:5000])


def read_osm(path, **params):
    from trajmoe.datasets import read_osm_pois

    return read_osm_pois(path, **params)


def fetch_osm(**params):
    from trajmoe.datasets import fetch_osm_helsinki

    return fetch_osm_helsinki(**params)


def home_with_folder_as_file():
    home = scratch()
    (home / "osm" / "Helsinki.osm.pbf").mkdir(parents=True)
    return home


def geolife(**params):
    from trajmoe.datasets import load_geolife

    return load_geolife(**params)


def shares(**cols):
    pytest.importorskip("matplotlib").use("Agg")
    return pd.DataFrame({"city": "nyc", "hour": [8, 8, 8, 20, 20, 20], "expert": ["poi", "geo", "pop"] * 2,
                         "share": [.5, .3, .2, .2, .3, .5], "n_visits": [30, 30, 30, 10, 10, 10]}).assign(**cols)


def transfer_rows(**cols):
    pytest.importorskip("matplotlib").use("Agg")
    return [dict({"target_city": "nyc", "fraction": f, "seed": s, "acc@1": a}, **cols)
            for f, s, a in [(0.01, 0, .20), (0.01, 1, .22), (0.05, 0, .25), (0.05, 1, .27)]]


def plot(name, **params):
    def call(*args):
        from trajmoe import plotting

        return getattr(plotting, name)(*args, **params)
    return call


@dataclass
class Entry:
    """One bad input.

    id : str
        Short name, listed in docs/bad_inputs.rst.
    input : str
        What the user passed (one line, as in the docs page).
    make : callable
        Returns the arguments of ``call`` (a tuple).
    call : callable
        The public function the input goes through.
    handling : {"error", "warning", "accepted"}
    expect : type or None
        The exception class ("error") or warning class ("warning").
    match : str
        Regex the message must match (column, rows, fix).
    check : callable, optional
        Extra check of the call's result ("warning", "accepted").
    """

    id: str
    input: str
    make: Callable
    call: Callable
    handling: str
    expect: type | None = None
    match: str = ""
    check: Callable | None = None


E, W, A = "error", "warning", "accepted"


def _same_order(out):
    return out.index.tolist()


CATALOGUE = [
    # ------------------------------------------------------------------ the frame itself
    Entry("not-a-frame", "a NumPy array instead of a DataFrame", lambda: (grid().to_numpy(),),
          validate_visits, E, SchemaError, r"must be a pandas DataFrame.*got ndarray.*pd\.DataFrame"),
    Entry("series", "one column (a Series) instead of a DataFrame", lambda: (grid()["x"],),
          fit_encoder, E, SchemaError, r"must be a pandas DataFrame.*got Series"),
    Entry("dict", "a dict of columns", lambda: (grid().to_dict("list"),),
          fit_predict, E, SchemaError, r"must be a pandas DataFrame.*got dict"),
    Entry("empty", "a frame with 0 rows", lambda: (grid().iloc[:0],),
          fit_predict, E, SchemaError, r"empty \(0 rows\)"),
    Entry("duplicate-columns", "two columns named x",
          lambda: (pd.concat([grid(), grid()[["x"]]], axis=1),),
          validate_visits, E, SchemaError, r"duplicated column names \['x'\]: rename or drop"),
    Entry("no-user-id", "the user column named uid",
          lambda: (grid().rename(columns={"user_id": "uid"}),),
          validate_visits, E, SchemaError, r"missing required column 'user_id'.*rename"),
    Entry("no-time", "neither started_at nor day/slot", lambda: (grid().drop(columns=["day", "slot"]),),
          validate_visits, E, SchemaError, r"no time form.*'started_at'.*'day'.*'slot'"),
    Entry("half-time", "day without slot", lambda: (grid().drop(columns=["slot"]),),
          validate_visits, E, SchemaError, r"no time form found \(found only 'day'\)"),
    Entry("no-location", "neither lat/lon nor x/y", lambda: (grid().drop(columns=["x", "y"]),),
          fit_encoder, E, SchemaError, r"no location form.*'lat'.*'lon'.*'x'.*'y'"),
    Entry("user-nan", "a missing user_id", lambda: (put(grid(), "user_id", 4, np.nan),),
          validate_visits, E, SchemaError, r"column 'user_id' has 1 NaN value at rows \[4\]"),
    Entry("city-nan", "a missing city", lambda: (put(grid(city="A"), "city", 2, None),),
          validate_visits, E, SchemaError, r"column 'city' has 1 NaN value at rows \[2\].*city name"),
    Entry("city-empty", "an empty city name", lambda: (put(grid(city="A"), "city", 2, ""),),
          validate_visits, E, SchemaError, r"column 'city' has 1 empty name at rows \[2\]: give each city a name"),
    # ------------------------------------------------------------------------------ time
    Entry("time-unparsable", "started_at strings 'not a date' and '2020-13-45'",
          lambda: (put(put(naive_strings(), "started_at", 3, "not a date"), "started_at", 7, "2020-13-45"),),
          validate_visits, E, SchemaError, r"column 'started_at' has 2 unparsable values at rows \[3, 7\]"),
    Entry("time-day-first", "day-first strings 'dd.mm.yyyy HH:MM', one of them with a day above 12",
          lambda: (put(naive_strings().assign(started_at=lambda d: pd.to_datetime(d.started_at).dt.strftime(
              "%d.%m.%Y %H:%M")), "started_at", 9, "13.01.2020 09:00"),),
          validate_visits, E, SchemaError, r"read differently day first and month first.*format="),
    Entry("time-nat", "a missing time (NaT)", lambda: (put(nyc(), "started_at", 5, pd.NaT),),
          validate_visits, E, SchemaError, r"column 'started_at' has 1 missing \(NaT\) value at rows \[5\]"),
    Entry("time-unix-seconds", "Unix seconds as int64",
          lambda: (nyc().assign(started_at=lambda d: d.started_at.astype("int64") // 10**9),),
          validate_visits, E, SchemaError, r"'started_at'.*int64.*pd\.to_datetime\(.*unit='s'"),
    Entry("time-open-end", "the ERP 'open end' sentinel 9999-12-31",
          lambda: (put(naive_strings(), "started_at", [2, 8], "9999-12-31 00:00:00"),),
          validate_visits, E, SchemaError, r"'started_at' has 2 values outside 1971-01-01\.\.2099-12-31 at rows \[2, 8\]"),
    Entry("time-epoch-zero", "Unix time 0 (1970-01-01) for 'unknown'",
          lambda: (put(nyc(), "started_at", 6, pd.Timestamp(0, tz="UTC")),),
          validate_visits, E, SchemaError, r"'started_at' has 1 value outside.*rows \[6\].*1970-01-01"),
    Entry("time-year-one", "the database minimum 0001-01-01",
          lambda: (put(naive_strings(), "started_at", 1, "0001-01-01 00:00:00"),),
          validate_visits, E, SchemaError, r"'started_at' has 1 value outside.*rows \[1\]"),
    Entry("time-seconds-as-ns", "Unix seconds parsed without unit (January 1970)",
          lambda: (nyc().assign(started_at=lambda d: pd.to_datetime(d.started_at.astype("int64") // 10**9)),),
          validate_visits, E, SchemaError, r"'started_at' has 36 values outside.*unit='s'"),
    Entry("time-naive-and-aware", "naive and tz-aware times in one city",
          lambda: (put(nyc(), "started_at", 1, pd.Timestamp("2020-01-06 10:00")),),
          validate_visits, E, SchemaError, r"city 'city' mixes tz-aware and naive.*rows \[1\].*tz_localize"),
    Entry("time-dst-offsets", "strings with +01:00 and +02:00 (a DST change)",
          lambda: (pd.DataFrame({"user_id": 1, "x": [1, 2], "y": 0,
                                 "started_at": ["2021-03-28T23:00:00+02:00", "2021-03-27T23:00:00+01:00"]}),),
          validate_visits, A, check=lambda out: _same_order(out) == [1, 0]),
    Entry("time-arrow-tz", "pd.ArrowDtype(pa.timestamp('ns', tz='America/New_York'))",
          lambda: (arrow(nyc(), "America/New_York"),), validate_visits, A,
          check=lambda out: str(out["started_at"].dtype) == "datetime64[ns, America/New_York]"),
    Entry("time-arrow-naive", "pd.ArrowDtype(pa.timestamp('ns')) (naive)", lambda: (arrow(nyc(), None),),
          validate_visits, A, check=lambda out: str(out["started_at"].dtype) == "datetime64[ns]"),
    Entry("time-utc-no-city-tz", "times in UTC and no city_tz", lambda: (
        MarkovBaseline(min_stays=2).fit(nyc().assign(started_at=lambda d: d.started_at.dt.tz_convert("UTC"))),
        nyc().assign(started_at=lambda d: d.started_at.dt.tz_convert("UTC"))),
        predict_with, W, DataWarning, r"'started_at' is in UTC and no city_tz.*city_tz="),
    Entry("time-mixed-offsets", "one visit given in UTC, the others in +09:00, no city_tz", lambda: (
        MarkovBaseline(min_stays=2),
        put(nyc(tz="Asia/Tokyo"), "started_at", 0, nyc(tz="Asia/Tokyo")["started_at"][0].tz_convert("UTC"))),
        lambda model, X: model.fit(X).predict(X), W, DataWarning,
        r"UTC offsets more than 1 hour apart \(\+00:00 \(1\), \+09:00 \(35\)"),
    Entry("time-form-other-than-fit", "timestamps at predict time for a city fitted on day/slot",
          lambda: (MarkovBaseline(min_stays=2).fit(grid()),
                   grid().drop(columns=["day", "slot"]).assign(
                       started_at=lambda d: pd.Timestamp("2024-01-01") + pd.to_timedelta(d.index * 30, unit="min"))),
          predict_with, W, DataWarning, r"city 'city' was fitted on day/slot times and X gives its visits as "
          r"started_at: the two number weekdays differently"),
    Entry("time-zone-other-than-fit", "the instants a model was fitted on, given in UTC or another zone",
          lambda: (MarkovBaseline(min_stays=2).fit(nyc()),
                   nyc().assign(started_at=lambda d: d.started_at.dt.tz_convert("Asia/Tokyo"))),
          predict_with, A, check=lambda pred: pred.tolist() == MarkovBaseline(min_stays=2).fit(nyc()).predict(
              nyc()).tolist()),
    Entry("day-fraction", "day 0.5", lambda: (put(grid(), "day", 4, 0.5),),
          validate_visits, E, SchemaError, r"column 'day'.*non-integer.*rows \[4\].*whole numbers"),
    Entry("day-huge", "day 10**9 (overflows time keys)", lambda: (put(grid(), "day", 3, 10**9),),
          validate_visits, E, SchemaError, r"column 'day'.*outside -100000\.\.100000.*rows \[3\]"),
    Entry("day-nan", "a missing day", lambda: (put(grid(), "day", 2, np.nan),),
          validate_visits, E, SchemaError, r"column 'day' has 1 NaN value at rows \[2\]"),
    Entry("slot-48", "slot 48 (slots are 0..47)", lambda: (put(grid(), "slot", 4, 48),),
          fit_predict, E, SchemaError, r"column 'slot'.*outside 0\.\.47.*rows \[4\]"),
    Entry("slot-bool", "a boolean slot column", lambda: (grid(slot=True),),
          validate_visits, E, SchemaError, r"column 'slot' is boolean"),
    # -------------------------------------------------------------------------- location
    Entry("lat-nan", "a missing latitude", lambda: (put(nyc(), "lat", 5, np.nan),),
          fit_predict, E, SchemaError, r"column 'lat' has 1 NaN value at rows \[5\].*drop or fill"),
    Entry("lat-95", "latitude 95", lambda: (put(nyc(), "lat", 5, 95.0),),
          validate_visits, E, SchemaError, r"column 'lat'.*outside -90\.\.90 degrees at rows \[5\]"),
    Entry("lat-inf", "latitude inf", lambda: (put(nyc(), "lat", 5, np.inf),),
          validate_visits, E, SchemaError, r"column 'lat'.*outside -90\.\.90.*rows \[5\]"),
    Entry("lat-lon-swapped", "lat and lon swapped (Singapore)",
          lambda: (nyc().assign(lat=103.85, lon=1.29),),
          validate_visits, E, SchemaError, r"column 'lat'.*swapped.*rename"),
    Entry("lon-text", "lon 'west'", lambda: (put(nyc(), "lon", 3, "west"),),
          validate_visits, E, SchemaError, r"column 'lon'.*non-numeric.*rows \[3\].*pd\.to_numeric"),
    Entry("lat-strings", "lat/lon as numeric strings", lambda: (nyc().astype({"lat": str, "lon": str}),),
          validate_visits, A, check=lambda out: out["lat"].dtype == np.float64),
    Entry("lat-polar", "latitude 89.9 (beyond UTM)", lambda: (put(nyc(), "lat", 7, 89.9),),
          fit_encoder, E, SchemaError, r"column 'lat' has 1 value outside -80\.\.84 degrees, the latitudes UTM covers, at rows \[7\]"),
    Entry("null-island", "three rows at (0, 0) in a New York frame",
          lambda: (put(put(nyc(), "lat", [0, 1, 2], 0.0), "lon", [0, 1, 2], 0.0),),
          fit_encoder, W, DataWarning, r"3 of 36 visits are outliers.*null island.*rows \[0, 1, 2\]",
          check=lambda enc: enc.n_excluded_["city"]["outlier_visits"] == 3),
    Entry("lost-minus-sign", "lon 74.0 instead of -74.0 in one row", lambda: (put(nyc(), "lon", 2, 74.0),),
          fit_encoder, W, DataWarning, r"1 of 36 visits are outliers.*farther than 500 km.*lost minus sign.*rows \[2\]",
          check=lambda enc: enc.cities_["city"].grid.crs == "EPSG:32618"),
    Entry("all-null-island", "every row at (0, 0)", lambda: (nyc().assign(lat=0.0, lon=0.0),),
          fit_encoder, E, SchemaError, r"city 'city': no grid can be laid, all 36 points lie at \(0, 0\)"),
    Entry("all-outliers", "one city name for two places 3,900 km apart, half the visits each",
          lambda: (pd.concat([nyc(), nyc().assign(lat=34.05, lon=-118.25, user_id=lambda d: d.user_id + 10)]),),
          fit_encoder, E, SchemaError, r"city 'city': all 72 visits lie farther than 500 km from the city's centre "
          r"\(3.*give each its own 'city' value"),
    Entry("frame-outside-region", "a frame 110 km north of the region the model was fitted on (a mislabelled city)",
          lambda: (MarkovBaseline(min_stays=2).fit(nyc()), nyc().assign(lat=lambda d: d.lat + 1.0)),
          predict_with, W, DataWarning, r"city 'city': none of the 36 visits scored lies in the region the model "
          r"was fitted on: every one lies in a cell the model never saw.*fix X's 'city' column"),
    Entry("region-too-large", "cell_size 100 m with a region_margin of 20 km around a POI 200 km away",
          lambda: (nyc(), pd.DataFrame({"city": ["city"], "lat": [42.5], "lon": [-74.0], "category": ["cafe"]})),
          lambda X, P: SpatialSemanticEncoder(cell_size=100, region_margin=20000).fit(X, pois=P), W, DataWarning,
          r"region_margin=20000 m around its \d+ visited and POI cells of 100 m makes [\d,]+ candidate cells \(more "
          r"than 100,000\).*Lower region_margin or raise cell_size"),
    Entry("xy-near-index-limit", "x/y cells one inside the index limit -(2**30 - 1)",
          lambda: (grid().assign(y=lambda d: -(2**30 - 1) + d.y),), fit_encoder, A,
          check=lambda enc: int(enc.cities_["city"].cells[:, 1].min()) == -(2**30 - 1)
          and len(enc.cities_["city"].cells) == len(np.unique(enc.cities_["city"].keys))),
    Entry("antimeridian", "a city around longitude 180 (Fiji), its points on both sides",
          lambda: (nyc().assign(lat=-16.8, lon=lambda d: [179.99 if u % 2 else -179.99 for u in d.user_id]),),
          fit_encoder, A, check=lambda enc: enc.cities_["city"].excluded["outlier_visits"] == 0
          and enc.cities_["city"].grid.crs in ("EPSG:32701", "EPSG:32760")),
    Entry("zone-border", "London points on both sides of the UTM border at 0 degrees",
          lambda: (pd.DataFrame({"user_id": [0, 1, 2, 0], "day": 0, "slot": [1, 2, 3, 4], "lat": 51.5,
                                 "lon": [-0.05, -0.05, -0.05, 0.05]}),),
          fit_encoder, A, check=lambda enc: enc.cities_["city"].grid.crs == "EPSG:32631"),
    Entry("x-fraction", "x/y as float degrees", lambda: (grid().assign(x=lambda d: d.x * 1.5 + 0.25),),
          validate_visits, E, SchemaError, r"column 'x'.*non-integer.*grid cell indices.*'lat'/'lon'"),
    Entry("x-huge", "x = 2**31 (past the cell keys)", lambda: (grid().assign(x=lambda d: d.x + 2**31),),
          fit_encoder, E, SchemaError, r"column 'x'.*2\*\*30.*rows \[0, 1, 2, 3, 4, \.\.\.\]"),
    Entry("x-nan", "a missing x", lambda: (put(grid(), "x", 4, np.nan),),
          fit_predict, E, SchemaError, r"column 'x' has 1 NaN value at rows \[4\]"),
    Entry("xy-rounded-degrees", "degrees rounded to int given as x/y",
          lambda: (grid().assign(x=-74, y=41),),
          fit_encoder, W, DataWarning, r"all 36 visits fall into 1 grid cell.*rounded degrees"),
    Entry("xy-metres", "UTM metres given as x/y",
          lambda: (grid().assign(x=lambda d: 583_000 + 700 * d.index, y=4_507_000),),
          fit_encoder, W, DataWarning, r"cells span 24,500 cells.*metres"),
    # ------------------------------------------------------------------------------ rows
    Entry("exact-duplicates", "two exact duplicate rows",
          lambda: (pd.concat([grid(), grid().iloc[[5]]]),),
          validate_visits, W, DataWarning, r"1 exact duplicate row.*kept.*drop_duplicates",
          check=lambda out: len(out) == 37),
    Entry("duplicates-counted-once", "an exact duplicate row when fitting the encoder",
          lambda: (pd.concat([grid(), grid().iloc[[5]]]),),
          fit_encoder, W, DataWarning, r"1 exact duplicate row.*dropped: each visit counts once",
          check=lambda enc: enc.n_excluded_["city"]["duplicate_visits"] == 1),
    Entry("same-second-ties", "rows of one user at the same second, in any order",
          lambda: (grid().assign(day=0, slot=5).iloc[::-1],),
          validate_visits, A,
          check=lambda out: out[["x", "y"]].to_numpy().tolist()
          == validate_visits(grid().assign(day=0, slot=5))[["x", "y"]].to_numpy().tolist()),
    Entry("mixed-type-users", "user ids 1 and '1' in one column",
          lambda: (grid().assign(user_id=lambda d: [1 if u == 0 else "1" if u == 1 else 2 for u in d.user_id]),),
          fit_predict, A, check=lambda pred: len(pred) == 36),
    Entry("text-user-ids", "user ids read as text ('2', '10') where another run read them as integers",
          lambda: (grid(n_users=12, n=3).assign(user_id=lambda d: d.user_id.astype(str)),),
          validate_visits, A,
          check=lambda out: out.index.tolist() == validate_visits(grid(n_users=12, n=3)).index.tolist()),
    Entry("mixed-type-cities", "city names 7 and '7' in one column",
          lambda: (grid().assign(city=lambda d: [7 if u == 0 else "7" for u in d.user_id]),),
          validate_visits, E, SchemaError, r"column 'city' has distinct values with the same name as text: "
          r"7 \(int\), '7' \(str\), at rows \[0, .*astype\(str\)"),
    Entry("category-dtypes", "categorical user_id and city", lambda: (
        grid(city="A").astype({"user_id": "category", "city": "category"}),), fit_predict, A,
        check=lambda pred: len(pred) == 36),
    Entry("extra-columns", "extra columns of any dtype", lambda: (grid(note=[["a"]] * 36, flag=True),),
          validate_visits, A, check=lambda out: "note" in out and "flag" in out),
    # ------------------------------------------------------------------------------ POIs
    Entry("poi-category-unknown", "a POI category outside the taxonomy",
          lambda: (pois(category=["cafe", "Coffee Shop", "cafe"]),),
          validate_pois, E, SchemaError, r"column 'category'.*outside the taxonomy at rows \[1\].*map_categories"),
    Entry("poi-count-negative", "a negative POI count", lambda: (pois(count=[1, -2, 3]),),
          validate_pois, E, SchemaError, r"column 'count' has 1 negative value at rows \[1\]"),
    Entry("poi-no-category", "a POI frame without category", lambda: (pois().drop(columns="category"),),
          validate_pois, E, SchemaError, r"missing required column 'category'.*map_categories"),
    Entry("poi-null-island", "a POI at (0, 0)",
          lambda: (nyc(), put(put(pois(), "lat", 2, 0.0), "lon", 2, 0.0)),
          fit_encoder, W, DataWarning, r"1 of 3 POIs are outliers.*null island.*rows \[2\]",
          check=lambda enc: enc.n_excluded_["city"]["outlier_pois"] == 1),
    Entry("poi-other-city", "POIs of a city without visits", lambda: (nyc(), pois(city="Boston")),
          fit_encoder, W, DataWarning, r"POIs of cities without visits in X are not used: \{'Boston': 3\}"),
    Entry("poi-no-city-column", "a POI frame without a city column, visits of a named city",
          lambda: (nyc().assign(city="nyc"), pois()), fit_encoder, W, DataWarning,
          r"not used: \{'city': 3\}.*the POI frame has no 'city' column, so its POIs went to the default city"),
    # ------------------------------------------------------------------------- estimators
    Entry("min-stays-filters", "min_stays=5 leaves 9 of 10 users without a window", lambda: (
        PopularityBaseline().fit(grid(n_users=1, n=6)),
        pd.concat([grid(n_users=1, n=6).assign(day=0, slot=range(6))]
                  + [grid(n_users=1, n=3).assign(user_id=u, day=0, slot=range(3)) for u in range(1, 10)],
                  ignore_index=True)),
        lambda model, X: model.target_ranks(X), W, DataWarning,
        r"min_stays=5: 27 of 33 visits.*9 of 10 users have no such window"),
    Entry("unknown-city", "predict on a city the model never saw",
          lambda: (MarkovBaseline(min_stays=2).fit(grid(city="A")), grid(city="B")),
          predict_with, E, UnknownCityError, r"'B'.*partial_fit"),
    Entry("not-fitted", "predict before fit", lambda: (MarkovBaseline(), grid()),
          predict_with, E, NotFittedError, r"not fitted"),
    Entry("cell-size-negative", "cell_size=-500", lambda: (grid(),),
          lambda X: SpatialSemanticEncoder(cell_size=-500).fit(X), E, ValueError,
          r"cell_size must be a finite positive number of metres"),
    # -------------------------------------------------------------------------------- CLI
    Entry("cli-fraction", "trajmoe demo --fraction 5", lambda: (["demo", "--fraction", "5"],),
          "cli", E, SystemExit, r"argument --fraction: must be in \(0, 1\], got 5"),
    Entry("cli-epochs", "trajmoe demo --max-epochs 0", lambda: (["demo", "--max-epochs", "0"],),
          "cli", E, SystemExit, r"argument --max-epochs: must be >= 1, got 0"),
    Entry("cli-unknown-source", "trajmoe demo --sources nyc,paris", lambda: (["demo", "--sources", "nyc,paris"],),
          "cli", E, SystemExit, r"Unknown source city \['paris'\]"),
    Entry("cli-target-as-source", "trajmoe demo --target osaka --sources osaka,toronto",
          lambda: (["demo", "--target", "osaka", "--sources", "osaka,toronto"],),
          "cli", E, SystemExit, r"target city 'osaka' must not be a source"),
    Entry("cli-abbreviation", "trajmoe demo --frac 0.1", lambda: (["demo", "--frac", "0.1"],),
          "cli", E, SystemExit, r"unrecognized arguments: --frac"),
    # --------------------------------------------------------- GPS fixes (StayPointDetector)
    Entry("fixes-lat-lon-swapped", "GPS fixes with lat and lon swapped (Beijing)",
          lambda: (fixes().rename(columns={"lat": "lon", "lon": "lat"}),), detect, E, SchemaError,
          r"column 'lat' has 80 values outside -90\.\.90.*look swapped.*rename"),
    Entry("fixes-all-invalid", "every fix at latitude 95", lambda: (fixes().assign(lat=95.0),), detect, E,
          SchemaError, r"all 80 position fixes are invalid: 80 with 'lat' missing or outside -90\.\.90 at rows \[0, 1"),
    Entry("fixes-invalid-rows", "one fix with a missing latitude", lambda: (put(fixes(), "lat", 3, np.nan),),
          detect, W, DataWarning, r"1 invalid.*Invalid: 1 with 'lat' missing or outside -90\.\.90 at rows \[3\]",
          check=lambda visits: len(visits) == 6),
    Entry("fixes-naive-and-aware", "one naive tracked_at among tz-aware ones",
          lambda: (put(fixes(), "tracked_at", 0, pd.Timestamp("2009-01-05 08:00")),), detect, E, SchemaError,
          r"'tracked_at' mixes tz-aware and naive times: 1 naive value at rows \[0\].*tz_localize"),
    Entry("fixes-seconds-as-ns", "tracked_at from Unix seconds parsed without unit (January 1970)",
          lambda: (fixes().assign(tracked_at=lambda d: pd.to_datetime(d.tracked_at.astype("int64") // 10**9)),),
          detect, E, SchemaError, r"'tracked_at' has 80 values outside 1971-01-01\.\.2099-12-31.*unit='s'"),
    Entry("fixes-unknown-tz", "StayPointDetector(tz='Mars/Olympus')", lambda: (fixes(),),
          lambda X: detect(X, tz="Mars/Olympus"), E, ValueError, r"tz = 'Mars/Olympus' is not a known IANA time zone"),
    Entry("fixes-duplicate-columns", "GPS fixes with two lat columns",
          lambda: (pd.concat([fixes(), fixes()[["lat"]]], axis=1),), detect, E, SchemaError,
          r"position fixes have duplicated column names \['lat'\]"),
    Entry("fixes-lat-bool", "a boolean lat column", lambda: (fixes().assign(lat=True),), detect, E, SchemaError,
          r"column 'lat' is boolean"),
    Entry("fixes-single-fix", "one fix, include_last=True", lambda: (fixes().iloc[:1],),
          lambda X: detect(X, include_last=True), E, ValueError,
          r"no stay point found in 1 fixes.*lower time_threshold; a user with a single fix never has a stay point"),
    # ------------------------------------------------------------------------ pipelines
    Entry("pipeline-param-to-detector", "pipe.partial_fit(fixes, staypointdetector__dist=50)",
          lambda: (fixes(),), partial_fit_with(staypointdetector__dist=50), E, ValueError,
          r"StayPointDetector\.fit_transform takes no fit parameters, got \['dist'\].*set_params"),
    Entry("pipeline-unknown-param", "pipe.partial_fit(fixes, markovbaseline__pios=P) (a typo)",
          lambda: (fixes(),), partial_fit_with(markovbaseline__pios=None), E, ValueError,
          r"Step 'markovbaseline' \(MarkovBaseline\.partial_fit\) does not take the parameters \['pios'\]; it takes \['pois'\]"),
    Entry("pipeline-empty-param-name", "pipe.partial_fit(fixes, markovbaseline__=P)",
          lambda: (fixes(),), partial_fit_with(markovbaseline__=None), E, ValueError,
          r"does not accept the markovbaseline__ parameter.*stepname__parameter"),
    Entry("filter-missing-city", "ShortUserFilter on a frame with one city missing",
          lambda: (grid(city="a").pipe(put, "city", 4, None),), lambda X: ShortUserFilter(min_visits=2).fit_transform(X),
          E, SchemaError, r"column 'city' has 1 missing value at rows \[4\]: every visit needs a city"),
    Entry("filter-bool-min-visits", "ShortUserFilter(min_visits=True)", lambda: (grid(),),
          lambda X: ShortUserFilter(min_visits=True).fit_transform(X), E, ValueError,
          r"'min_visits' parameter of ShortUserFilter must be an int >= 1, got True \(a bool\)"),
    Entry("filter-drops-everyone", "ShortUserFilter(min_visits=100) in a pipeline on 3 users of 12 visits",
          lambda: (grid(),), lambda X: make_pipeline(ShortUserFilter(min_visits=100), MarkovBaseline()).fit(X), E,
          ValueError, r"ShortUserFilter\(min_visits=100\) would drop every one of the 3 users.*most visits a user has is 12"),
    Entry("filter-fit-param", "pipe.fit(X, shortuserfilter__min_visit=3) (a typo)", lambda: (grid(),),
          lambda X: make_pipeline(ShortUserFilter(), MarkovBaseline()).fit(X, shortuserfilter__min_visit=3), E,
          ValueError, r"ShortUserFilter\.fit_transform takes no fit parameters, got \['min_visit'\]"),
    Entry("localizer-naive-and-aware", "CityTimeZoneLocalizer on started_at strings with and without offset",
          lambda: (put(naive_strings(), "started_at", 4, "2020-01-06 20:00:00+00:00"),), localize, E, SchemaError,
          r"'started_at' mixes tz-aware and naive times: 35 naive values at rows \[0, 1, 2, 3, 5, \.\.\.\] next to 1"),
    Entry("localizer-unparsable", "CityTimeZoneLocalizer on a started_at string 'soon'",
          lambda: (put(naive_strings(), "started_at", 6, "soon"),), localize, E, SchemaError,
          r"column 'started_at' has 1 unparsable value at rows \[6\]"),
    Entry("localizer-unix-seconds", "CityTimeZoneLocalizer on started_at as int64 Unix seconds",
          lambda: (nyc().assign(started_at=lambda d: d.started_at.astype("int64") // 10**9),), localize, E,
          SchemaError, r"column 'started_at' has dtype int64, not datetime64: convert it, e\.g\. "
          r"pd\.to_datetime\(X\['started_at'\], unit='s', utc=True\)"),
    Entry("localizer-missing-city", "CityTimeZoneLocalizer on a frame with one city missing",
          lambda: (nyc().assign(city="nyc").astype({"city": object}).pipe(put, "city", 5, None),), localize, E,
          SchemaError, r"column 'city' has 1 missing value at rows \[5\]: every visit needs a city"),
    Entry("localizer-not-a-frame", "CityTimeZoneLocalizer on a NumPy array", lambda: (nyc().to_numpy(),),
          localize, E, SchemaError, r"CityTimeZoneLocalizer needs a non-empty visit frame \(DataFrame\), got ndarray"),
    # ---------------------------------------------------------------------- data files
    Entry("osm-truncated", "read_osm_pois on a truncated .osm.pbf (an interrupted download)",
          lambda: (truncated_osm(),), read_osm, E, ValueError,
          r"broken\.osm\.pbf \(5,000 bytes\) is not a readable OpenStreetMap extract.*truncated"),
    Entry("osm-empty-file", "read_osm_pois on an empty file", lambda: (osm_file(b""),), read_osm, E, ValueError,
          r"\(0 bytes\) is not a readable OpenStreetMap extract"),
    Entry("osm-directory", "read_osm_pois on a folder", lambda: (osm_file(None),), read_osm, E, IsADirectoryError,
          r"broken\.osm\.pbf is a directory"),
    Entry("osm-path-none", "read_osm_pois(None)", lambda: (None,), read_osm, E, TypeError,
          r"path must be the path of an OpenStreetMap extract.*got NoneType"),
    Entry("osm-keys-string", "read_osm_pois(path, keys='amenity')", lambda: (truncated_osm(),),
          lambda path: read_osm(path, keys="amenity"), E, TypeError, r"keys must be a sequence.*use \('amenity',\)"),
    Entry("fetch-home-is-file", "fetch_osm_helsinki(data_home=<a file>)", lambda: (osm_file(b"x"),),
          lambda home: fetch_osm(data_home=home, download=False), E, NotADirectoryError,
          r"the data home .*broken\.osm\.pbf \(from the data_home argument\) is a file, not a folder"),
    Entry("fetch-folder-as-file", "a folder where the data file should be", lambda: (home_with_folder_as_file(),),
          lambda home: fetch_osm(data_home=home, download=False), E, IsADirectoryError,
          r"data file 'osm/Helsinki\.osm\.pbf' is a directory.*remove it"),
    Entry("fetch-download-string", "fetch_osm_helsinki(download='no')", lambda: ("no",),
          lambda flag: fetch_osm(download=flag), E, TypeError, r"download must be True or False, got str 'no'"),
    Entry("geolife-unknown-tz", "load_geolife(tz='Asia/Beijing')", lambda: ("Asia/Beijing",),
          lambda tz: geolife(tz=tz), E, ValueError, r"tz = 'Asia/Beijing' is not a known IANA time zone"),
    Entry("geolife-unknown-user", "load_geolife(users=['000', '999'])", lambda: (["000", "999"],),
          lambda users: geolife(users=users), E, ValueError,
          r"users \['999'\] have no GeoLife file.*the users there are \['000'"),
    Entry("geolife-int-users", "load_geolife(users=[0, 10])", lambda: ([0, 10],),
          lambda users: geolife(users=users), E, TypeError, r"users must be a list of GeoLife user ids.*03d"),
    Entry("geolife-no-users", "load_geolife(users=[])", lambda: ([],),
          lambda users: geolife(users=users), E, ValueError, r"users is an empty list.*users=None for all"),
    # -------------------------------------------------------------------------- plotting
    Entry("plot-ax-not-axes", "plot_prediction_map(..., ax='left')",
          lambda: (HistoryFrequencyBaseline(min_stays=1).fit(grid(n_users=1, n=6)), grid(n_users=1, n=6)),
          plot("plot_prediction_map", visit=2, ax="left"), E, TypeError, r"ax must be matplotlib Axes.*got str 'left'"),
    Entry("plot-shares-text", "gate shares as text ('50%')", lambda: (shares(share="50%"),),
          plot("plot_gate_shares"), E, ValueError, r"shares column 'share' has 6 non-numeric values.*'50%'"),
    Entry("plot-shares-hour-24", "gate shares at hour 24", lambda: (shares(hour=24),),
          plot("plot_gate_shares"), E, ValueError, r"shares column 'hour' has 6 values outside 0\.\.23"),
    Entry("plot-shares-no-visits", "gate shares with n_visits 0", lambda: (shares(n_visits=0),),
          plot("plot_gate_shares"), E, ValueError, r"n_visits sums to 0.*\('nyc', 'geo'\)"),
    Entry("plot-shares-city-nan", "gate shares without a city", lambda: (shares(city=None),),
          plot("plot_gate_shares"), E, ValueError, r"6 rows without a city or expert at rows \[0, 1"),
    Entry("plot-axes-not-axes", "plot_gate_shares(shares, axes=[1, 2])", lambda: (shares(),),
          plot("plot_gate_shares", axes=[1, 2]), E, TypeError, r"axes must be matplotlib Axes.*got int 1"),
    Entry("plot-results-path", "plot_transfer_curve('results.csv')", lambda: ("results.csv",),
          plot("plot_transfer_curve"), E, TypeError, r"got the path 'results\.csv'.*pd\.read_csv"),
    Entry("plot-results-fraction-text", "transfer results with fraction '1%'", lambda: (transfer_rows(fraction="1%"),),
          plot("plot_transfer_curve"), E, ValueError, r"results column 'fraction' has 4 non-numeric values"),
    Entry("plot-references-list", "plot_transfer_curve(rows, references=['markov'])", lambda: (transfer_rows(),),
          plot("plot_transfer_curve", references=["markov"]), E, TypeError, r"references must be a dict"),
    Entry("plot-references-unknown", "a reference model that is not in the results", lambda: (transfer_rows(),),
          plot("plot_transfer_curve", references={"markov": "Markov"}), E, ValueError,
          r"references \['markov'\] are not models of results"),
]


def _raised_by_trajmoe(exc):
    """True when the innermost frame of the traceback is trajmoe's own code (or scikit-learn's
    ``check_is_fitted``, which raises the documented NotFittedError)."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = Path(frames[-1].filename).resolve()
    if isinstance(exc, NotFittedError):
        return last.name == "validation.py" and "sklearn" in last.parts
    return PACKAGE in last.parents


def _snapshot(args):
    return [a.copy(deep=True) if isinstance(a, (pd.DataFrame, pd.Series)) else None for a in args]


@pytest.mark.parametrize("entry", CATALOGUE, ids=[e.id for e in CATALOGUE])
def test_catalogue_entry(entry, monkeypatch, capsys):
    args = entry.make()
    before = _snapshot(args)
    if entry.call == "cli":
        from trajmoe import cli

        def no_data(*a, **k):
            raise AssertionError("data loaded before the arguments were checked")

        monkeypatch.setattr(cli, "load_city", no_data)
        with pytest.raises(SystemExit) as info:
            cli.main(*args)
        assert info.value.code == 2
        assert re.search(entry.match, capsys.readouterr().err), entry.id
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if entry.handling == E:
            with pytest.raises(entry.expect) as info:
                entry.call(*args)
            assert re.search(entry.match, str(info.value)), str(info.value)
            assert _raised_by_trajmoe(info.value), "".join(traceback.format_exception(info.value))
            result = None
        else:
            result = entry.call(*args)
    data_warnings = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    if entry.handling == W:
        assert any(re.search(entry.match, m) for m in data_warnings), data_warnings
    if entry.check is not None:
        assert entry.check(result)
    for arg, snap in zip(args, before):  # the caller's frames are never modified
        if snap is not None:
            if isinstance(snap, pd.DataFrame):
                pd.testing.assert_frame_equal(arg, snap)
            else:
                pd.testing.assert_series_equal(arg, snap)


def test_catalogue_is_large_and_ids_are_unique():
    ids = [e.id for e in CATALOGUE]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)
    assert {e.handling for e in CATALOGUE} == {E, W, A}


def test_docs_page_lists_every_entry_with_its_handling():
    text = DOCS.read_text()
    for e in CATALOGUE:
        row = re.search(rf"^\s*\* - ``{re.escape(e.id)}``\n\s*- .+\n\s*- (\S+)", text, re.M)
        assert row, f"{e.id} is not in {DOCS.name}"
        assert row.group(1).lower().startswith(e.handling), (e.id, row.group(1))
    index = (DOCS.parent / "index.rst").read_text()
    assert re.search(r"^\s+bad_inputs$", index, re.M), "docs/index.rst does not list bad_inputs"


def test_failed_gps_pipeline_call_leaves_every_step_as_it_was():
    pipe = gps_pipeline()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(SchemaError, match="must be a pandas DataFrame"):
            pipe.partial_fit(fixes(), markovbaseline__pois="not a frame")  # fails in the last step
    assert not hasattr(pipe[0], "counts_") and not hasattr(pipe[-1], "encoder_")
    with pytest.raises(ValueError, match="no stay point found"):
        pipe[0].fit(fixes().iloc[:1])  # a failed fit of the detector sets no counts either
    assert not hasattr(pipe[0], "counts_")
    with warnings.catch_warnings(record=True) as caught:  # a typo is refused before any step runs
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="does not take the parameters"):
            pipe.partial_fit(fixes(), markovbaseline__pios=None)
        pipe.set_params(markovbaseline__min_stays=0)  # and so is an invalid parameter of a step
        with pytest.raises(ValueError, match="'min_stays' parameter of MarkovBaseline"):
            pipe.partial_fit(fixes())
    assert not [w for w in caught if issubclass(w.category, DataWarning)]
