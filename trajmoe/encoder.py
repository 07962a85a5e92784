"""The spatial semantic encoder: one feature space for the locations of every city.

Every location is a grid cell (500 m by default) described by what is there (POI counts
over the shared functional taxonomy), where it is (centroid coordinates z-scored within
the city) and how popular it is (a rank bin of its training visit count).

References
----------
Han et al., "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human Mobility
Modeling", arXiv 2505.18670, section 3.1 (spatial semantic encoder); docs/method.rst, "Location features".
"""

from __future__ import annotations

import copy
import numbers
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._set_output import _get_output_config
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._constants import CELL_KEY_BITS, MAX_CELL_INDEX, POPULARITY_EDGES
from ._encoded import encoded_output
from ._validation import check_choice
from ._warnings import caller_stacklevel
from .exceptions import DataWarning, SchemaError, UnknownCityError, ZeroShotWarning
from .schema import (CATEGORY, CITY, COUNT, DEFAULT_CITY, LAT, LON, POI_CATEGORY, USER, X, Y, validate_pois,
                     validate_visits, validated_visits)
from .spatial import OUTLIER_DISTANCE, CityGrid, continuous_longitudes, distance_to, outlier_mask, utm_crs_for, wrap_longitude
from .taxonomy import TAXONOMY, map_frame_categories

__all__ = ["SpatialSemanticEncoder", "CityTable", "popularity_bins", "POPULARITY_EDGES",
           "POPULARITY_RANKS", "MAX_REGION_CELLS", "REGION_QUANTILE", "MAX_GRID_SPAN", "ChunkedEncoder"]

#: An x/y city whose cells span more than this many cells on one axis gets a DataWarning
#: (metres or other fine units given as ``x``/``y``; YJMob100K spans 200).
MAX_GRID_SPAN = 10_000
#: Which cells a cell's popularity is ranked among (:func:`popularity_bins`).
POPULARITY_RANKS = ("vocabulary", "visited")
#: Share of a city's POI and visit cells left out of its region's box at each end (per axis),
#: so that a few stray points do not stretch the box.
REGION_QUANTILE = 0.001
#: Largest region box laid for one city, in cells (25,000 km2 at 500 m; a YJMob100K city is
#: 200 x 200 = 40,000 cells).
MAX_REGION_CELLS = 100_000
_KEY_OFFSET = np.int64(MAX_CELL_INDEX)
_KEY_SHIFT = CELL_KEY_BITS


def cell_keys(ix, iy):
    """One int64 per cell (|ix|, |iy| < 2**30), increasing with (ix, iy)."""
    return ((np.asarray(ix, np.int64) + _KEY_OFFSET) << _KEY_SHIFT) | (np.asarray(iy, np.int64) + _KEY_OFFSET)


def cells_of_keys(keys):
    """Inverse of :func:`cell_keys`: int64 array of shape (n, 2) of (ix, iy)."""
    keys = np.asarray(keys, np.int64)
    return np.column_stack([(keys >> _KEY_SHIFT) - _KEY_OFFSET, (keys & ((1 << _KEY_SHIFT) - 1)) - _KEY_OFFSET])


def popularity_bins(visit_counts, edges=POPULARITY_EDGES, among="vocabulary"):
    """Rank bins of cells by visit count, 1 (most popular) .. len(edges) + 1.

    A cell's rank share is the fraction of the cells it is ranked among with strictly more
    visits, so tied cells share one bin. Share < 1 % -> bin 1, 1-5 % -> 2, 5-10 % -> 3,
    10-20 % -> 4, 20-40 % -> 5, 40-60 % -> 6, 60-80 % -> 7, >= 80 % -> 8. Bin 0 is reserved
    for padding.

    - ``among="vocabulary"`` (the default): every cell of the city is ranked, never-visited
      ones included (they tie, and share the bin their share gives). Under an open
      vocabulary, where most cells of a region's box were never visited, this puts most or
      all cells in bins 1-3: every cell of Gowalla Bay Area fine-tuned on 5 % of its users
      is in bin 1.
    - ``among="visited"``: the paper's ranking of its vocabulary, whose locations are all
      visited: only visited cells are ranked, and never-visited cells join the last bin ("the
      rest"), whatever their number.

    Parameters
    ----------
    visit_counts : array-like of int, shape (n_cells,)
        Training visits per cell.
    edges : sequence of float, default POPULARITY_EDGES
        Increasing upper edges of the bins, as shares in (0, 1).
    among : {"vocabulary", "visited"}, default "vocabulary"
        The cells a cell is ranked among (see above).

    Returns
    -------
    ndarray of int64, shape (n_cells,)
        Bin per cell, in 1..len(edges) + 1.

    Raises
    ------
    ValueError
        If ``among`` is not one of :data:`POPULARITY_RANKS`, ``visit_counts`` is not a 1-D
        array of finite numbers >= 0 (naming the first offending positions), or ``edges`` are
        not strictly increasing shares in (0, 1).

    References
    ----------
    Han et al., arXiv 2505.18670, section 3.1; docs/method.rst, "Location features"
    (popularity rank bins; computed on training data only).
    """
    check_choice("among", among, POPULARITY_RANKS)
    cuts = np.asarray(edges, dtype=float)
    if cuts.ndim != 1 or not len(cuts) or not ((cuts > 0) & (cuts < 1)).all() or (np.diff(cuts) <= 0).any():
        raise ValueError(f"edges must be strictly increasing shares in (0, 1), got {tuple(np.ravel(edges))}.")
    counts = np.asarray(visit_counts)
    if counts.ndim != 1 or counts.dtype.kind not in "biuf":
        raise ValueError(f"visit_counts must be a 1-D array of counts, got shape {counts.shape} and dtype "
                         f"{counts.dtype}.")
    bad = np.flatnonzero(~np.isfinite(counts) | (counts < 0))
    if len(bad):
        raise ValueError(f"visit_counts must be finite and >= 0: {len(bad)} are not, at positions "
                         f"{bad[:5].tolist()} (values {counts[bad[:5]].tolist()}).")
    bins = np.full(counts.shape, len(cuts) + 1, np.int64)
    visited = counts > 0 if among == "visited" else np.ones(counts.shape, bool)
    ordered = np.sort(counts[visited])
    above = len(ordered) - np.searchsorted(ordered, counts[visited], side="right")
    bins[visited] = np.searchsorted(cuts, above / max(len(ordered), 1), side="right") + 1
    return bins


@dataclass
class CityTable:
    """Fitted locations of one city.

    Attributes
    ----------
    grid : CityGrid
    cells : ndarray of int64, shape (n_locations, 2)
        (ix, iy) grid indices, sorted; row i is location id i.
    poi_counts : ndarray of float32, shape (n_locations, n_categories)
        POIs per taxonomy category in each cell.
    visit_counts : ndarray of int64, shape (n_locations,)
        Training visits per cell.
    coord_mean, coord_std : ndarray of float64, shape (2,)
        Metres; the z-scoring of the centroids.
    venues : DataFrame or None
        Distinct visited venues (``ix``, ``iy``, ``cat`` and ``venue_id`` or ``lat``/``lon``)
        the POI counts were built from, so that :meth:`SpatialSemanticEncoder.partial_fit`
        adds new venues without counting known ones twice; None when the counts come
        from a POI frame.
    n_unseen : int, default 0
        Cells met only in a frame being predicted, appended after the fitted cells (rows
        ``n_locations - n_unseen`` onwards, not in key order): they have no POIs and the
        popularity bin of a never-visited cell, and leave the bins of the fitted cells as
        they are. Always 0 in a fitted encoder.
    excluded : dict of str -> int, default {}
        Rows of the fitting frames left out of this city's cells and counts, summed over
        fit and partial_fit: ``"duplicate_visits"`` (exact duplicate rows, counted once),
        ``"outlier_visits"`` and ``"outlier_pois"`` (null island, or farther than
        :data:`trajmoe.spatial.OUTLIER_DISTANCE` from the city's centre).
    zero_shot_bin : int or None, default None
        Set only for a city met in a frame being scored, which the encoder was never fitted
        on (:meth:`SpatialSemanticEncoder.with_unseen_cities`): the popularity bin of every one
        of its cells, none of which has a training visit. None for a fitted city.
    popularity_rank : {"vocabulary", "visited"}, default "vocabulary"
        The cells a cell's popularity is ranked among (:func:`popularity_bins`).
    """

    grid: CityGrid
    cells: np.ndarray
    poi_counts: np.ndarray
    visit_counts: np.ndarray
    coord_mean: np.ndarray
    coord_std: np.ndarray
    venues: pd.DataFrame | None = None
    n_unseen: int = 0
    excluded: dict = field(default_factory=dict)
    zero_shot_bin: int | None = None
    popularity_rank: str = "vocabulary"

    @property
    def n_locations(self):
        """Number of candidate cells ``N`` of the city (int): location ids are ``0..N-1``."""
        return len(self.cells)

    @property
    def keys(self):
        """One int64 key per cell (:func:`trajmoe.spatial.cell_keys` of its grid indices),
        ndarray of shape (N,), in location-id order."""
        return cell_keys(self.cells[:, 0], self.cells[:, 1])

    def coords(self, cells=None):
        """Z-scored centroid coordinates, float32 (n, 2)."""
        cells = self.cells if cells is None else cells
        xy = self.grid.centroid_metres(cells[:, 0], cells[:, 1])
        return ((xy - self.coord_mean) / self.coord_std).astype(np.float32)

    @property
    def popularity(self):
        """Popularity bin per location, int64 (n_locations,) in 1..8 (see :func:`popularity_bins`)."""
        bins, unseen = self._bins()
        return np.concatenate([bins, np.full(self.n_unseen, unseen, np.int64)])

    @property
    def unseen_popularity(self):
        """Bin that a never-visited cell gets in this city: that of its never-visited cells, or,
        if every cell was visited, the bin one more cell without a visit would get."""
        return self._bins()[1]

    def _bins(self):
        """Bins of the fitted cells (int64 [n_locations - n_unseen]) and of a never-visited cell."""
        fitted = self.visit_counts[:self.n_locations - self.n_unseen]
        if getattr(self, "zero_shot_bin", None) is not None:
            return np.full(len(fitted), self.zero_shot_bin, np.int64), int(self.zero_shot_bin)
        among = getattr(self, "popularity_rank", "vocabulary")
        bins = popularity_bins(fitted, among=among)
        never = np.flatnonzero(fitted == 0)
        unseen = bins[never[0]] if len(never) else popularity_bins(np.append(fitted, 0), among=among)[-1]
        return bins, int(unseen)

    def lookup(self, ix, iy):
        """Location ids of cells, -1 where the cell is not in the vocabulary."""
        keys = self.keys
        order = np.argsort(keys, kind="stable") if self.n_unseen else np.arange(len(keys))
        query = cell_keys(ix, iy)
        pos = np.searchsorted(keys[order], query)
        pos_c = np.minimum(pos, len(keys) - 1)
        found = (len(keys) > 0) & (keys[order][pos_c] == query)
        return np.where(found, order[pos_c], -1).astype(np.int64)

    def with_cells(self, cells):
        """This table with the given cells appended where they are not locations yet.

        Parameters
        ----------
        cells : ndarray of int64, shape (n, 2)
            (ix, iy) grid indices.

        Returns
        -------
        CityTable
            ``self`` when every cell is known; else a new table whose extra cells (no POIs,
            no visits) are counted in ``n_unseen``.
        """
        new = np.unique(cell_keys(*np.asarray(cells, np.int64).reshape(-1, 2).T))
        new = new[self.lookup(*cells_of_keys(new).T) < 0]
        if not len(new):
            return self
        return CityTable(self.grid, np.concatenate([self.cells, cells_of_keys(new)]),
                         np.concatenate([self.poi_counts, np.zeros((len(new), self.poi_counts.shape[1]), np.float32)]),
                         np.concatenate([self.visit_counts, np.zeros(len(new), np.int64)]),
                         self.coord_mean, self.coord_std, self.venues, self.n_unseen + len(new),
                         dict(getattr(self, "excluded", {})), getattr(self, "zero_shot_bin", None),
                         getattr(self, "popularity_rank", "vocabulary"))


class SpatialSemanticEncoder(TransformerMixin, BaseEstimator):
    """Grid cells of every city described in one shared feature space.

    For each city, visits are mapped to cells of a square grid (``cell_size`` metres, in
    the city's UTM zone via pyproj, or the given ``x``/``y`` grid). A city's vocabulary
    is the city's region: every cell of the box that spans its POIs and training visits
    (the 0.1 % to 99.9 % quantiles of their cells, so that a stray point cannot blow it
    up), widened by ``region_margin`` metres on each side, together with every cell that
    holds a POI or a training visit. Cells nobody visited are candidates too (zero POIs
    unless the POI frame says otherwise, the popularity bin of a never-visited cell), so
    a model can score a cell it never saw in training: the open vocabulary that a
    feature-based model allows. Location ids 0..N-1 follow the sorted (ix, iy) order.
    Each cell gets:

    - ``poi_<category>``: POI counts over the 34 categories of :data:`trajmoe.taxonomy.TAXONOMY`
      (from the ``pois`` frame of that city, else from the distinct visited venues and
      their ``poi_category``);
    - ``x_z``, ``y_z``: the centroid's easting/northing z-scored within the city;
    - ``popularity``: rank bin 1..8 of the cell's training visit count among the city's cells
      (its visited cells with ``popularity_rank="visited"``; see :func:`popularity_bins`).

    Parameters
    ----------
    cell_size : float, default 500.0
        Side of a grid cell in metres. Lat/lon input is gridded at this size. X/y input is
        already gridded: its cells keep their indices, and ``cell_size`` says how many metres
        one of them spans (500 for YJMob100K), which sets their metric positions (distances of
        the gravity baselines and of the distance prior, sinusoidal features) and the cells
        ``region_margin`` adds. Tuning ``cell_size`` in a grid search therefore rescales x/y
        cities too.
    region_margin : float or None, default 2000.0
        Metres added on every side of the box of a city's POIs and visits; rounded up to
        whole cells. None: the closed vocabulary of earlier versions (only the cells that
        hold a POI or a training visit), under which every other cell is a guaranteed miss.
        Where the box would hold more than :data:`MAX_REGION_CELLS` cells (a city in pieces
        far apart), the region is instead every cell within ``region_margin`` of a cell
        with a POI or a visit (a DataWarning where these too exceed it).
    categories : {"auto", "taxonomy", "foursquare", "yjmob", "flickr", "osm", "gowalla"} \
or dict, default "auto"
        Vocabulary of the visits' ``poi_category`` and the POIs' ``category`` names. ``"auto"``
        recognises a vocabulary the library maps (:func:`trajmoe.taxonomy.detect_source`:
        Foursquare, Gowalla, YJMob, Flickr names or OSM ``key=value`` tags) and maps the names
        onto the taxonomy; taxonomy names pass unchanged. A source name or a dict ``{raw
        name: taxonomy name}`` names the mapping; ``"taxonomy"`` takes the names as taxonomy
        names. Visit names left unmapped are reported (DataWarning) and not counted; POI
        names left unmapped raise a SchemaError naming them (drop them first with
        :func:`trajmoe.taxonomy.map_frame_categories` ``(pois, "category",
        unmapped="drop")``).
    popularity_rank : {"vocabulary", "visited"}, default "vocabulary"
        The cells a cell's popularity is ranked among (:func:`popularity_bins`).
        ``"visited"`` is the paper's: visited cells ranked among themselves, never-visited cells
        in the last bin.
        ``"vocabulary"`` ranks every cell of the region, so that under the open vocabulary
        most cells share a bin (all of them in a few-shot city): with meaningful bins, the
        default network pre-trained on popularity counted from the very users it trains on
        collapsed when fine-tuned on 5 % of a new city (validation Acc@1 .244 -> .126 on
        Gowalla Bay Area, .254 -> .066 on YJMob100K A; docs/results.rst, "Where the
        transfer goes wrong").

    Attributes
    ----------
    cities_ : dict of str -> CityTable
        Fitted locations per city, in order of registration.
    n_excluded_ : dict of str -> dict of str -> int
        Per city, the rows of the fitting frames left out of its cells and counts (summed
        over fit and partial_fit; each reported with a DataWarning when it happens):
        ``"duplicate_visits"`` (exact duplicate rows count once), ``"outlier_visits"`` and
        ``"outlier_pois"`` (see Notes).
    feature_names_out_ : ndarray of str, shape (37,)
    n_features_in_ : int
        Number of columns of the frame seen in fit.

    See Also
    --------
    trajmoe.TrajMoERegressor : uses this encoder for its location features.

    Notes
    -----
    Input checks of the grid (see the user guide's page "Bad inputs"):

    - A lat/lon city is projected onto the UTM zone of its robust centre
      (:func:`trajmoe.spatial.utm_crs_for`), stored in its grid and reused by
      :meth:`partial_fit`, so that its cell ids do not depend on which rows were fitted.
    - Outliers, points at null island (0, 0) or farther than
      :data:`trajmoe.spatial.OUTLIER_DISTANCE` (500 km) from the city's centre, are left out
      of the city's grid, vocabulary, visit and POI counts (DataWarning with the count and
      the rows; ``n_excluded_``). Their visits stay in the frame as out-of-vocabulary
      visits: never a candidate, a miss when they are a target.
    - An x/y city whose visits (20 or more) all lie in a 2 x 2 block of cells within
      degree ranges (rounded degrees given as ``x``/``y``), or whose cells span more than
      :data:`MAX_GRID_SPAN` cells (metres given as ``x``/``y``), gets a DataWarning.

    References
    ----------
    Han et al., arXiv 2505.18670, section 3.1; docs/method.rst, "Location features".

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe import SpatialSemanticEncoder
    >>> X = pd.DataFrame({"user_id": [1, 1], "day": [0, 0], "slot": [16, 18],
    ...                   "x": [3, 4], "y": [7, 7]})
    >>> enc = SpatialSemanticEncoder(region_margin=None).fit(X)
    >>> enc.location_table("city")[["label", "n_visits", "popularity"]]
          label  n_visits  popularity
    0  city:3_7         1           1
    1  city:4_7         1           1

    With the default margin of 2000 m (4 cells of 500 m), the region is the box of
    (3..4) x (7..7) widened by 4 cells on every side: 10 x 9 = 90 candidate cells.

    >>> SpatialSemanticEncoder().fit(X).cities_["city"].n_locations
    90
    """

    def __init__(self, cell_size=500.0, region_margin=2000.0, categories="auto", popularity_rank="vocabulary"):
        self.cell_size = cell_size
        self.region_margin = region_margin
        self.categories = categories
        self.popularity_rank = popularity_rank

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, pois=None):
        """Learn the grid, vocabulary and features of every city in X.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame (see :func:`trajmoe.schema.validate_visits`).
        y : None
            Ignored.
        pois : DataFrame of shape (n_pois, n_columns), optional
            POI frame (``city``, ``lat``/``lon`` or ``x``/``y``, ``category``, optional
            ``count``). Cities present here take their POI counts from it.

        Returns
        -------
        self

        Raises
        ------
        trajmoe.schema.SchemaError
            If X or pois is not a valid frame.
        ValueError
            If ``cell_size`` is not a positive number, ``region_margin`` not None or a number
            >= 0, or ``popularity_rank`` not one of :data:`POPULARITY_RANKS`.
        """
        check_choice("popularity_rank", self.popularity_rank, POPULARITY_RANKS)
        size = self.cell_size
        if isinstance(size, bool) or not isinstance(size, numbers.Real) or not np.isfinite(size) or size <= 0:
            raise ValueError(f"cell_size must be a finite positive number of metres, got {size!r}.")
        margin = self.region_margin
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, numbers.Real)
                                   or not np.isfinite(margin) or margin < 0):
            raise ValueError(f"region_margin must be None or a finite number of metres >= 0, got {margin!r}.")
        self._add(X, pois, fitted={})
        self.n_features_in_ = X.shape[1]
        return self

    def partial_fit(self, X, y=None, pois=None):
        """Add the cities of X, or extend known ones with more visits.

        A known city keeps its grid and its coordinate z-scoring; its vocabulary grows by
        the new cells and its visit counts (hence popularity bins) accumulate. Its POI
        counts are replaced by a new ``pois`` frame of that city; without one, counts from
        an earlier POI frame are kept, and counts from visited venues grow by the venues
        not seen before (each distinct venue counts once). Parameters as in :meth:`fit`.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            As :meth:`fit`; also if ``popularity_rank`` was changed (``set_params``) since the
            cities were fitted: their bins would be ranked two ways.
        """
        if not hasattr(self, "cities_"):
            return self.fit(X, y, pois=pois)
        check_choice("popularity_rank", self.popularity_rank, POPULARITY_RANKS)
        fitted = {getattr(t, "popularity_rank", "vocabulary") for t in self.cities_.values()
                  if getattr(t, "zero_shot_bin", None) is None}
        if fitted - {self.popularity_rank}:
            raise ValueError(
                f"popularity_rank={self.popularity_rank!r}, but the fitted cities rank popularity "
                f"{sorted(fitted)}: set it back, or fit() anew to rank every city the new way.")
        return self._add(X, pois)

    def _add(self, X, pois, fitted=None):
        """Fit the cities of X onto ``fitted`` (default: the fitted cities) and adopt the result
        only once every city is built, so that a failure leaves the encoder as it was."""
        if self.categories != "taxonomy":  # raw names of a known vocabulary onto the taxonomy
            X = map_frame_categories(X, POI_CATEGORY, self.categories, unmapped="keep")
            pois = map_frame_categories(pois, CATEGORY, self.categories, unmapped="keep")
        visits = validate_positional(X, "drop")
        duplicates = _duplicates_per_city(X, visits)
        poi_frame = validate_pois(pois) if pois is not None else None
        if poi_frame is not None:
            stray = poi_frame.loc[~poi_frame[CITY].isin(visits[CITY].unique()), CITY].value_counts()
            if len(stray):
                fix = (f"set the POI frame's '{CITY}' column to the matching city names" if CITY in pois else
                       f"the POI frame has no '{CITY}' column, so its POIs went to the default city "
                       f"{DEFAULT_CITY!r}: add a '{CITY}' column naming the city of each POI")
                warnings.warn(
                    f"POIs of cities without visits in X are not used: { {str(k): int(v) for k, v in stray.items()} } (rows per city). "
                    f"Cities of X: {sorted(visits[CITY].unique())}; {fix}.", DataWarning, stacklevel=3)
        cities = dict(self.cities_ if fitted is None else fitted)
        for city, rows in visits.groupby(CITY, sort=False):
            city_pois = None
            if poi_frame is not None:
                city_pois = poi_frame[poi_frame[CITY] == city]
                city_pois = city_pois if len(city_pois) else None
            cities[city] = self._fit_city(city, rows, city_pois, cities.get(city),
                                          n_duplicates=duplicates.get(city, 0))
        self.cities_ = cities
        self.feature_names_out_ = np.array(
            [f"poi_{c}" for c in TAXONOMY] + ["x_z", "y_z", "popularity"], dtype=object)
        return self

    def _grid_for(self, frame, previous, city=None):
        if previous is not None:
            return previous.grid
        if LAT in frame and frame[LAT].notna().all():
            try:
                return CityGrid.from_points(frame[LAT], frame[LON], self.cell_size)
            except ValueError as exc:  # every point at null island
                raise SchemaError(
                    f"city {city!r}: no grid can be laid, {exc} Rows {_labels(frame.index)}: give "
                    f"their real {LAT!r}/{LON!r}, or drop them.") from None
        return CityGrid(float(self.cell_size), None)

    @property
    def n_excluded_(self):
        """Rows left out of each city's cells and counts, dict of str -> dict of str -> int
        (``"duplicate_visits"``, ``"outlier_visits"``, ``"outlier_pois"``; summed over fit and
        partial_fit). See the class Notes."""
        check_is_fitted(self, "cities_")
        keys = ("duplicate_visits", "outlier_visits", "outlier_pois")
        return {city: {k: int(getattr(t, "excluded", {}).get(k, 0)) for k in keys}
                for city, t in self.cities_.items()}

    @staticmethod
    def _drop_outliers(city, grid, frame, what):
        """``frame`` without the outliers of a lat/lon city (DataWarning with counts), and
        how many were dropped."""
        if not grid.is_projected or not len(frame) or LAT not in frame:
            return frame, 0
        lat, lon = frame[LAT].to_numpy(float), frame[LON].to_numpy(float)
        out = grid.outliers(lat, lon)
        if not out.any():
            return frame, 0
        warnings.warn(
            f"city {city!r}: {int(out.sum())} of {len(frame)} {what} are outliers and left out of the city's "
            f"grid and counts: {_outlier_kinds(grid, lat, lon, out)}; rows {_labels(frame.index[out])}. Fix their "
            f"{LAT!r}/{LON!r}, drop them, or give far-away points their own {CITY!r} value "
            "(counts in n_excluded_).", DataWarning, stacklevel=5)
        return frame[~out], int(out.sum())

    @staticmethod
    def _check_grid_scale(city, visits):
        """DataWarning for x/y cities that look like degrees or metres, not cell indices."""
        if not len(visits) or X not in visits:
            return
        x, y = visits[X].to_numpy(np.int64), visits[Y].to_numpy(np.int64)
        span = max(int(x.max() - x.min()), int(y.max() - y.min()))
        n_cells = len(np.unique(cell_keys(x, y)))
        if (len(visits) >= 20 and span <= 1 and np.abs(x).max() <= 180 and np.abs(y).max() <= 180
                and max(np.abs(x).max(), np.abs(y).max()) > 1):
            warnings.warn(
                f"city {city!r}: all {len(visits)} visits fall into {n_cells} grid cell"
                f"{'' if n_cells == 1 else 's'} (x {x.min()}..{x.max()}, y {y.min()}..{y.max()}): "
                f"'{X}'/'{Y}' are grid cell indices (e.g. 1..200 of 500 m cells for YJMob100K), and "
                f"these look like rounded degrees. Give coordinates in degrees as '{LAT}'/'{LON}' floats.",
                DataWarning, stacklevel=5)
        elif span > MAX_GRID_SPAN:
            warnings.warn(
                f"city {city!r}: its '{X}'/'{Y}' cells span {span:,} cells (more than {MAX_GRID_SPAN:,}): "
                f"'{X}'/'{Y}' are grid cell indices, and these look like metres or other fine units. "
                f"Give coordinates in degrees as '{LAT}'/'{LON}', or divide metres by a cell size "
                f"(e.g. X['x'] // 500).", DataWarning, stacklevel=5)

    @staticmethod
    def _cells(grid, frame, city):
        if grid.is_projected:
            cols, form = (LAT, LON), "lat/lon"
        else:
            cols, form = (X, Y), "x/y grid cells"
        missing = ~frame[list(cols)].notna().all(axis=1) if all(c in frame for c in cols) else np.ones(len(frame), bool)
        if np.any(missing):
            labels = list(frame.index[np.asarray(missing)][:5])
            raise SchemaError(
                f"City {city!r} was fitted with {form}, but {int(np.sum(missing))} rows (e.g. {labels}) give "
                f"no '{cols[0]}'/'{cols[1]}'. Give every row of one city the same location form, or use "
                "another city name for data on another grid.")
        if grid.is_projected:
            return np.column_stack(grid.cells_of(frame[LAT].to_numpy(), frame[LON].to_numpy()))
        return np.column_stack([frame[X].to_numpy(np.int64), frame[Y].to_numpy(np.int64)])

    def _fit_city(self, city, visits, pois, previous, n_duplicates=0):
        grid = self._grid_for(visits, previous, city)
        visits, n_out = self._drop_outliers(city, grid, visits, "visits")
        if not len(visits) and previous is None:
            raise _all_outliers(city, n_out, grid)
        n_poi_out = 0
        if pois is not None:
            pois, n_poi_out = self._drop_outliers(city, grid, pois, "POIs")
        if not grid.is_projected:
            self._check_grid_scale(city, visits)
        excluded = dict(getattr(previous, "excluded", {})) if previous is not None else {}
        for key, n in (("duplicate_visits", n_duplicates), ("outlier_visits", n_out), ("outlier_pois", n_poi_out)):
            excluded[key] = excluded.get(key, 0) + int(n)
        visit_cells = self._cells(grid, visits, city)
        venues = None
        no_pois = np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0)
        if pois is not None:
            # a POI frame describes the city's POIs completely: it replaces earlier counts
            cat_index = _category_index(city, pois[CATEGORY].to_numpy())
            known_cat = cat_index >= 0
            poi_cells = self._cells(grid, pois, city)[known_cat]
            weights = (pois[COUNT].to_numpy(np.float64) if COUNT in pois else np.ones(len(pois)))[known_cat]
            cat_index = cat_index[known_cat]
        elif previous is not None and previous.venues is None:
            # counts came from a POI frame: keep them (copied below), new cells have none
            poi_cells, cat_index, weights = no_pois
        else:
            # distinct visited venues with their poi_category, united with those seen before
            venues = pd.DataFrame({"ix": visit_cells[:, 0], "iy": visit_cells[:, 1]})
            if POI_CATEGORY in visits:
                venue_cols = ["venue_id"] if "venue_id" in visits else [c for c in (LAT, LON) if c in visits]
                for col in venue_cols:
                    venues[col] = visits[col].to_numpy()
                venues["cat"] = _category_index(city, visits[POI_CATEGORY].to_numpy())
                venues = venues[venues["cat"] >= 0]
            else:
                venues = venues.iloc[:0].assign(cat=np.zeros(0, np.int64))
            if previous is not None:
                venues = pd.concat([previous.venues, venues], ignore_index=True)
            venues = venues.drop_duplicates().reset_index(drop=True)
            poi_cells = venues[["ix", "iy"]].to_numpy(np.int64)
            cat_index = venues["cat"].to_numpy(np.int64)
            weights = np.ones(len(venues))

        return self._city_table(city, grid, visit_cells, poi_cells, cat_index, weights, venues, excluded, previous,
                                pois)

    def _city_table(self, city, grid, visit_cells, poi_cells, cat_index, weights, venues, excluded, previous=None,
                    pois=None, visit_weights=None):
        """A city's table from its visit cells and POI cells (the second half of ``_fit_city``).

        ``visit_weights`` (int64, one per row of ``visit_cells``): visits per row, when the rows
        are distinct cells with counts (:class:`trajmoe.streaming.ChunkedEncoder`); None = one.
        """
        known = cell_keys(*previous.cells.T) if previous is not None else np.zeros(0, np.int64)
        region_weights = None
        if visit_weights is not None:
            region_weights = np.concatenate([visit_weights, np.ones(len(poi_cells), np.int64)])
        region = self._region(city, grid, np.concatenate([visit_cells, poi_cells]), region_weights)
        all_keys = np.unique(np.concatenate([known, cell_keys(*visit_cells.T), cell_keys(*poi_cells.T), region]))
        cells = cells_of_keys(all_keys)

        visit_counts = np.bincount(np.searchsorted(all_keys, cell_keys(*visit_cells.T)), weights=visit_weights,
                                   minlength=len(cells)).astype(np.int64)
        if previous is not None:
            visit_counts[np.searchsorted(all_keys, known)] += previous.visit_counts

        poi_counts = np.zeros((len(cells), len(TAXONOMY)), np.float32)
        if len(cat_index):
            rows = np.searchsorted(all_keys, cell_keys(*poi_cells.T))
            np.add.at(poi_counts, (rows, cat_index), weights)
        if previous is not None and pois is None and previous.venues is None:
            poi_counts[np.searchsorted(all_keys, known)] = previous.poi_counts

        xy = grid.centroid_metres(cells[:, 0], cells[:, 1])
        if previous is not None:
            mean, std = previous.coord_mean, previous.coord_std
        else:
            mean, std = xy.mean(axis=0), xy.std(axis=0)
            std = np.where(std > 0, std, 1.0)
        return CityTable(grid, cells, poi_counts, visit_counts.astype(np.int64), mean, std, venues,
                         excluded=excluded, popularity_rank=self.popularity_rank)

    def _region(self, city, grid, cells, weights=None):
        """Keys of the region's cells: the quantile-trimmed box of ``cells`` widened by
        ``region_margin``, or, where that box would exceed :data:`MAX_REGION_CELLS`, the
        cells within ``region_margin`` of one of ``cells``; empty for the closed vocabulary.
        ``weights``: how many times each row of ``cells`` counts (None: once)."""
        if self.region_margin is None or not len(cells):
            return np.zeros(0, np.int64)
        pad = int(np.ceil(self.region_margin / grid.cell_size))
        # the margin stops at the grid's index limit (a key holds indices within it)
        limit = MAX_CELL_INDEX - 1
        lo = np.maximum(np.floor(_quantile(cells, REGION_QUANTILE, weights)).astype(np.int64) - pad, -limit)
        hi = np.minimum(np.ceil(_quantile(cells, 1 - REGION_QUANTILE, weights)).astype(np.int64) + pad, limit)
        if np.prod((hi - lo + 1).astype(float)) <= MAX_REGION_CELLS:
            ix, iy = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
            return cell_keys(ix.ravel(), iy.ravel())
        # a city in far-apart pieces (a Flickr "Osaka" with a POI in Tokyo): widen each piece
        seen = cells_of_keys(np.unique(cell_keys(*cells.T)))
        step = np.arange(-pad, pad + 1)
        dx, dy = (a.ravel() for a in np.meshgrid(step, step, indexing="ij"))
        ix, iy = (seen[:, :1] + dx).ravel(), (seen[:, 1:] + dy).ravel()
        inside = (np.abs(ix) <= limit) & (np.abs(iy) <= limit)
        region = np.unique(cell_keys(ix[inside], iy[inside]))
        if len(region) > MAX_REGION_CELLS:
            warnings.warn(
                f"city {city!r}: region_margin={self.region_margin:g} m around its {len(seen):,} visited and POI "
                f"cells of {grid.cell_size:g} m makes {len(region):,} candidate cells (more than "
                f"{MAX_REGION_CELLS:,}): scoring will be slow and memory-hungry. Lower region_margin or raise "
                "cell_size.", DataWarning, stacklevel=caller_stacklevel())
        return region

    # ------------------------------------------------------------ transforming
    def locate(self, X):
        """City-local location id and label of every visit.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame; cities must have been fitted.

        Returns
        -------
        DataFrame of shape (n_visits, 5)
            Index and row order of X; columns ``city`` (str), ``location_id`` (int64, -1
            for a cell outside the city's vocabulary), ``label`` (str
            ``"<city>:<ix>_<iy>"``), ``ix``, ``iy`` (int64 grid indices).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        trajmoe.exceptions.UnknownCityError
            If X holds a city the encoder has not seen (fit or partial_fit it first); a
            ValueError.
        """
        return self._locate(X)[0]

    def _locate(self, X, validated=False, report=False, visits=None, labels=True, cells=None):
        """:meth:`locate` and a bool mask (n_visits,) of the outlier rows (their cells are
        never added as candidates by :meth:`with_unseen_cells`). ``labels=False``: without the
        ``label`` column (text per row, which scoring does not read). ``validated``: X is an output
        of :func:`~trajmoe.schema.validate_visits` already (not checked again). ``report``: a
        DataWarning per city with outliers (counts and rows), for frames that are scored.
        ``visits``: ``validate_visits(positional(X), duplicates="ignore")``, when the caller has
        it already (X then only names the rows). ``cells``: int64 (n_visits, 2), the grid cells of
        X's rows in order, when an encoder with the same grids located them already (the
        projection is not run again; the outlier mask is then all False)."""
        check_is_fitted(self, "cities_")
        if visits is None:
            visits = positional(X) if validated else validate_positional(X, "ignore")
        unknown = sorted(set(visits[CITY].unique()) - set(self.cities_))
        if unknown and isinstance(X, pd.DataFrame) and CITY not in X.columns:
            raise UnknownCityError(
                f"X has no '{CITY}' column, so its visits are taken to be in the city '{DEFAULT_CITY}', which "
                f"the encoder has not seen; its cities are {list(self.cities_)}. Add the '{CITY}' column "
                f"(e.g. X.assign({CITY}={next(iter(self.cities_))!r})).")
        if unknown:
            raise UnknownCityError(
                f"Column '{CITY}' holds cities the encoder has not seen: {unknown}. Known cities: "
                f"{list(self.cities_)}. Register them with partial_fit first (a next-location model can also "
                "score them zero-shot: predict(X, zero_shot=True, pois=...)).")
        n = len(visits)
        city = np.empty(n, dtype=object)
        location = np.empty(n, np.int64)
        known, cells = cells is not None, np.empty((n, 2), np.int64) if cells is None else cells
        outlier = np.zeros(n, dtype=bool)
        for name, rows in visits.groupby(CITY, sort=False):
            table = self.cities_[name]
            pos = rows.index.to_numpy()
            if not known:
                cells[pos] = self._cells(table.grid, rows, name)
            location[pos] = table.lookup(cells[pos, 0], cells[pos, 1])
            city[pos] = name
            if table.grid.is_projected and not known:
                lat, lon = rows[LAT].to_numpy(float), rows[LON].to_numpy(float)
                outlier[pos] = out = table.grid.outliers(lat, lon)
                if report and out.any():
                    warnings.warn(
                        f"city {name!r}: {int(out.sum())} of the {len(rows)} visits scored are outliers: "
                        f"{_outlier_kinds(table.grid, lat, lon, out)}; rows {_labels(X.index[pos[out]])}. They are "
                        "out of the vocabulary: never a candidate, and as a target a miss. Fix their "
                        f"{LAT!r}/{LON!r} or drop them.", DataWarning, stacklevel=caller_stacklevel())
        located = pd.DataFrame({CITY: city, "location_id": location,
                                **({"label": cell_labels(city, cells[:, 0], cells[:, 1])} if labels else {}),
                                "ix": cells[:, 0], "iy": cells[:, 1]}, index=X.index)
        return located, outlier

    def transform(self, X):
        """Location features of every visit's cell, carrying the visits (a pipeline step).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame. A city the encoder was not fitted on is described from X
            alone (see :meth:`with_unseen_cities`; DataWarning).

        Returns
        -------
        EncodedArray of float64, shape (n_visits, 37)
            34 POI counts, 2 z-scored coordinates, 1 popularity bin (1..8; a cell outside
            the vocabulary has no POIs and the bin of a never-visited cell), in the row
            order of X: an ndarray that also carries X (``.visits``) and this encoder
            (``.encoder``), so that a trajmoe estimator after it in a pipeline reads the visits
            (see :mod:`trajmoe._encoded`). Under ``set_output(transform="pandas")``, an
            :class:`~trajmoe._encoded.EncodedFrame` with :meth:`get_feature_names_out`
            columns and X's index, carrying the same.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        trajmoe.exceptions.UnknownCityError
            For an unseen city under the closed vocabulary (``region_margin=None``).

        Examples
        --------
        >>> import pandas as pd
        >>> from sklearn.pipeline import make_pipeline
        >>> from trajmoe import HistoryFrequencyBaseline, SpatialSemanticEncoder
        >>> X = pd.DataFrame({"user_id": 1, "day": 0, "slot": [0, 1, 2, 3], "x": [1, 2, 1, 2], "y": 0})
        >>> pipe = make_pipeline(SpatialSemanticEncoder(), HistoryFrequencyBaseline(min_stays=1)).fit(X)
        >>> pipe.predict(X).tolist()
        ['city:1_0', 'city:2_0', 'city:1_0', 'city:2_0']
        """
        features = self.with_unseen_cities(X)._features(X)
        return encoded_output(features, X, self, self.feature_names_out_,
                              _get_output_config("transform", self)["dense"])

    def _features(self, X):
        """The 37 features of every visit of X (cities of X known), float64 (n_visits, 37)."""
        located = self.locate(X)
        out = np.zeros((len(located), len(self.feature_names_out_)))
        city = located[CITY].to_numpy()
        n_poi = len(TAXONOMY)
        for name, table in self.cities_.items():
            pos = np.flatnonzero(city == name)
            if not len(pos):
                continue
            ids = located["location_id"].to_numpy()[pos]
            known = ids >= 0
            out[pos[known], :n_poi] = table.poi_counts[ids[known]]
            out[pos, n_poi:n_poi + 2] = table.coords(located[["ix", "iy"]].to_numpy()[pos])
            bins, unseen = table._bins()                  # the bins once for both
            bins = np.append(bins, np.full(table.n_unseen, unseen))
            out[pos, -1] = np.where(known, bins[np.maximum(ids, 0)], unseen)
        return out

    def with_unseen_cities(self, X, pois=None):
        """A copy that also describes the cities of X it was not fitted on (zero-shot).

        A feature-based model can score a city it never saw: its cells are described in the
        shared feature space from what is known without its training data. Each such city
        gets a temporary :class:`CityTable`, built as :meth:`fit` would build it from X's
        visits of the city (their grid, and the region of their cells widened by
        ``region_margin``) with these exceptions, so that nothing of the visits being scored
        but where they lie enters the features:

        - POI counts come from ``pois`` only (none without it); the visits' ``poi_category``
          is not read (on check-in data it names the visited cells, the targets among them);
        - no cell has a visit: every cell gets the popularity bin that never-visited cells
          have in most fitted cities (``CityTable.zero_shot_bin``).

        The fitted encoder is left as it is. The estimators use this copy while they predict
        or score (``cross_val_score`` with :class:`trajmoe.model_selection.LeaveOneCityOut`).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame.
        pois : DataFrame of shape (n_pois, n_columns), optional
            POI frame; only the rows of the unseen cities are read.

        Returns
        -------
        SpatialSemanticEncoder
            ``self`` if X holds no unseen city; else a shallow copy whose ``cities_`` also
            holds the temporary tables (after the fitted cities).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        trajmoe.exceptions.UnknownCityError
            If X holds an unseen city and the vocabulary is closed (``region_margin=None``):
            its candidates would then be exactly the cells X visits, the targets included.

        Warns
        -----
        trajmoe.exceptions.ZeroShotWarning
            Naming every unseen city, how it is described and how to learn it instead (a
            :class:`~trajmoe.exceptions.DataWarning`).
        """
        check_is_fitted(self, "cities_")
        if isinstance(X, pd.DataFrame):         # the usual case, every city known: no validation pass
            named = X[CITY].astype(str).unique() if CITY in X.columns else [DEFAULT_CITY]
            if set(named) <= set(self.cities_):
                return self
        visits = validate_positional(X, "ignore")
        unknown = sorted(set(visits[CITY].unique()) - set(self.cities_))
        if not unknown:
            return self
        if self.region_margin is None:
            raise UnknownCityError(
                f"Column '{CITY}' holds cities the encoder has not seen: {unknown}. Known cities: "
                f"{list(self.cities_)}. With region_margin=None (the closed vocabulary) an unseen city "
                "cannot be scored zero-shot: its only candidates would be the cells visited in X. "
                "Register it with partial_fit, or give the encoder a region_margin.")
        rows = visits[visits[CITY].isin(unknown)].drop(columns=[POI_CATEGORY], errors="ignore")
        city_pois = None
        if pois is not None:
            poi_city = (pois[CITY].astype(str) if CITY in pois.columns
                        else pd.Series(DEFAULT_CITY, index=pois.index)).to_numpy()
            of_city = np.isin(poi_city, unknown)
            city_pois = pois[of_city] if of_city.any() else None
            stray = ~of_city & ~np.isin(poi_city, list(self.cities_))    # a fitted city keeps its own tables
            if stray.any():
                warnings.warn(
                    f"{int(stray.sum())} of the {len(pois)} POIs are of cities {sorted(set(poi_city[stray]))}, "
                    f"neither fitted nor in X (its unseen cities are {unknown}): they are not used. Give the POIs "
                    f"of the unseen cities, their '{CITY}' column naming them.",
                    DataWarning, stacklevel=caller_stacklevel())
        described = SpatialSemanticEncoder(**self.get_params()).fit(rows, pois=city_pois)
        fitted_bins = [t.unseen_popularity for t in self.cities_.values()
                       if getattr(t, "zero_shot_bin", None) is None]
        zero_shot_bin = (int(pd.Series(fitted_bins).mode().max()) if fitted_bins
                         else len(POPULARITY_EDGES) + 1)
        out = copy.copy(self)
        out.cities_ = dict(self.cities_)
        for city in unknown:
            table = described.cities_[city]
            out.cities_[city] = replace(table, visit_counts=np.zeros_like(table.visit_counts), venues=None,
                                        zero_shot_bin=zero_shot_bin)
        warnings.warn(
            f"Cities {unknown} are unknown to this model: scored zero-shot, each from a temporary "
            f"grid and location table built from its {len(rows)} visits in X (their region widened by "
            f"region_margin={self.region_margin} m), POI counts "
            f"{'from pois' if city_pois is not None else 'none (pass pois= of these cities to use POI features)'} and no "
            f"visit counts (every cell gets popularity bin {zero_shot_bin}, that of a never-visited cell); "
            "the fitted model is left unchanged. Register a city with partial_fit to learn it."
            + (f" X has no '{CITY}' column, so all its visits are taken to be in the city "
               f"'{DEFAULT_CITY}': add the column to score the fitted cities {list(self.cities_)}."
               if DEFAULT_CITY in unknown and isinstance(X, pd.DataFrame) and CITY not in X.columns else ""),
            ZeroShotWarning, stacklevel=caller_stacklevel())
        return out

    def with_unseen_cells(self, X):
        """A copy whose city tables also hold the cells of X outside their region.

        A feature-based model can score a cell it never saw: its coordinates are known,
        its POIs are none, its popularity is that of a never-visited cell. The estimators
        use this copy while they predict, so that a visit to a cell outside the fitted
        region is neither a guaranteed miss nor a cell that cannot be copied. The fitted
        encoder is left as it is.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame of known cities.

        Returns
        -------
        SpatialSemanticEncoder
            ``self`` if every cell of X is a location already or ``region_margin`` is None
            (the closed vocabulary); else a shallow copy with new :class:`CityTable` objects
            for the cities that gained cells (appended after the fitted ones, so every fitted
            location keeps its id).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before fit.
        ValueError
            If X holds a city the encoder has not seen.

        Warns
        -----
        trajmoe.exceptions.DataWarning
            For outliers (null island, farther than 500 km from the city's centre; counts and
            rows), and for a city none of whose visits lies in its fitted region: a frame of
            another place, or a mislabelled ``city`` column, more often than a user who left
            town.
        """
        return self._with_unseen_cells(X)[0]

    def _with_unseen_cells(self, X, visits=None):
        """:meth:`with_unseen_cells`, and the grid cells of X's rows, int64 (n_visits, 2) (for a
        :meth:`_locate` of them by the encoder returned); ``visits``: X validated already (see
        :meth:`_locate`)."""
        located, outlier = self._locate(X, report=True, visits=visits, labels=False)
        cells = located[["ix", "iy"]].to_numpy(np.int64)
        # outliers (null island, far from the city) never become candidates
        outside = (located["location_id"] < 0).to_numpy() & ~outlier
        _warn_wholly_outside(located[CITY].to_numpy(), outside, outlier, added=self.region_margin is not None)
        unseen = located[outside]
        if self.region_margin is None or not len(unseen):
            return self, cells
        out = copy.copy(self)
        out.cities_ = dict(self.cities_)
        for city, rows in unseen.groupby(CITY, sort=False):
            out.cities_[city] = self.cities_[city].with_cells(rows[["ix", "iy"]].to_numpy(np.int64))
        return out, cells

    def get_feature_names_out(self, input_features=None):
        """Names of the 37 per-visit features: ``poi_<category>`` x 34, ``x_z``, ``y_z``, ``popularity``.

        Parameters
        ----------
        input_features : None
            Ignored (scikit-learn's signature).

        Returns
        -------
        ndarray of str (object) of shape (37,)

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        """
        check_is_fitted(self, "cities_")
        return self.feature_names_out_.copy()

    def location_table(self, city):
        """All locations of a city with their features.

        Parameters
        ----------
        city : str

        Returns
        -------
        DataFrame of shape (n_locations, 44)
            ``location_id``, ``label``, ``ix``, ``iy``, centroid ``lat``/``lon`` (degrees,
            NaN for x/y cities), ``n_visits``, ``popularity``, ``x_z``, ``y_z`` and the 34
            ``poi_<category>`` counts.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before ``fit``.
        trajmoe.exceptions.UnknownCityError
            If the city is unknown (a KeyError).
        """
        check_is_fitted(self, "cities_")
        if city not in self.cities_:
            raise UnknownCityError(f"Unknown city {city!r}; known cities: {list(self.cities_)}.")
        t = self.cities_[city]
        lat, lon = t.grid.centroid_lonlat(t.cells[:, 0], t.cells[:, 1])
        coords = t.coords()
        frame = pd.DataFrame({
            "location_id": np.arange(t.n_locations), "label": cell_labels(city, t.cells[:, 0], t.cells[:, 1]),
            "ix": t.cells[:, 0], "iy": t.cells[:, 1], "lat": lat, "lon": lon,
            "n_visits": t.visit_counts, "popularity": t.popularity, "x_z": coords[:, 0], "y_z": coords[:, 1]})
        pois = pd.DataFrame(t.poi_counts, columns=[f"poi_{c}" for c in TAXONOMY])
        return pd.concat([frame, pois], axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


def _quantile(values, q, weights=None):
    """``np.quantile(values, q, axis=0)`` (linear), of the rows repeated ``weights`` times.

    Exactly numpy's value: the two order statistics around the virtual index are found from
    the cumulative weights and interpolated by numpy itself.
    """
    if weights is None:
        return np.quantile(values, q, axis=0)
    values = np.asarray(values)
    weights = np.asarray(weights, np.int64)
    n = int(weights.sum())
    index = q * (n - 1)
    below = int(np.floor(index))
    out = np.empty(values.shape[1])
    for j in range(values.shape[1]):
        order = np.argsort(values[:, j], kind="stable")
        ends = np.cumsum(weights[order])
        pick = values[order, j][np.searchsorted(ends, [below, min(below + 1, n - 1)], side="right")]
        out[j] = np.quantile(pick.astype(float), index - below)
    return out


def _category_index(city, categories):
    """Column of every category in :data:`TAXONOMY` (-1 outside it or missing).

    Names outside the taxonomy are reported with a DataWarning; missing names too, unless
    all are missing (the city simply has no category information, e.g. Foursquare Singapore).
    """
    categories = pd.Series(np.asarray(categories, dtype=object), dtype=object)
    missing = categories.isna().to_numpy()
    cat_index = pd.Index(TAXONOMY).get_indexer(categories.where(~missing, None))
    unknown = (cat_index < 0) & ~missing
    if unknown.any():
        names = categories[unknown].value_counts()
        warnings.warn(
            f"City {city!r}: {int(unknown.sum())} POIs have a category outside the shared taxonomy "
            f"and are not counted ({ {str(k): int(v) for k, v in names.head(10).items()} }); map them "
            "with trajmoe.taxonomy.map_categories.", DataWarning, stacklevel=5)
    if missing.any() and not missing.all():
        warnings.warn(
            f"City {city!r}: {int(missing.sum())} visits have no '{POI_CATEGORY}' and do not count "
            "towards the POI features.", DataWarning, stacklevel=5)
    return cat_index.astype(np.int64)


def _warn_wholly_outside(city, outside, outlier, added=True):
    """DataWarning for every city none of whose scored visits (outliers aside) lies in its fitted
    region: a frame of another place, or a mislabelled ``city`` column, more often than a user
    who left town.

    Parameters
    ----------
    city : ndarray of object, shape (n_visits,)
    outside, outlier : ndarray of bool, shape (n_visits,)
        Visits in a cell outside the fitted region (outliers excluded), and outliers.
    added : bool, default True
        Whether such cells become candidates for the call (``region_margin`` not None), else
        they are out of the vocabulary.
    """
    for name in pd.unique(city):
        rows = (city == name) & ~outlier
        if rows.any() and outside[rows].all():
            scored = ("every one lies in a cell the model never saw, scored (for this call only) with no POIs "
                      "and the popularity of a never-visited cell" if added else
                      "every one is out of the vocabulary (region_margin=None): never a candidate, and as a "
                      "target a miss")
            warnings.warn(
                f"city {name!r}: none of the {int(rows.sum())} visits scored lies in the region the model "
                f"was fitted on: {scored}. If these visits are not in {name!r}, fix X's {CITY!r} column (or "
                "fit the model on their city); if they are, fine-tune on visits of this area.",
                DataWarning, stacklevel=caller_stacklevel())


def _outlier_kinds(grid, lat, lon, out):
    """How many of the outliers ``out`` lie at null island and how many far from the centre, and how far."""
    null = outlier_mask(lat, lon, None)  # null island only
    far = out & ~null
    parts = []
    if null[out].any():
        parts.append(f"{int(null.sum())} at (0, 0), 'null island', a placeholder for a missing position")
    if far.any():
        parts.append(f"{int(far.sum())} farther than {OUTLIER_DISTANCE / 1000:g} km from the city's centre "
                     f"({grid.centre[0]:.4f}, {grid.centre[1]:.4f}), up to "
                     f"{distance_to(lat[far], lon[far], grid.centre).max() / 1000:,.0f} km (a lost minus "
                     "sign? latitude and longitude swapped? another city?)")
    return "; ".join(parts)


def _labels(index):
    """Up to five row labels, e.g. ``[3, 8, 9]`` or ``[0, 1, 2, 3, 4, ...]``."""
    shown = [v.item() if isinstance(v, np.generic) else v for v in index[:5]]
    return "[" + ", ".join(repr(v) for v in shown) + (", ...]" if len(index) > 5 else "]")


def _duplicates_per_city(X, visits):
    """Exact duplicate rows dropped by ``validate_visits(..., duplicates="drop")`` per city."""
    if CITY in X.columns:
        before = X[CITY].astype(str).value_counts()
    else:
        before = pd.Series({DEFAULT_CITY: len(X)})
    after = visits[CITY].value_counts()
    return {str(c): int(n - after.get(c, 0)) for c, n in before.items() if n > after.get(c, 0)}


def positional(X):
    """X with a RangeIndex (row positions), so results can be put back in X's order."""
    return X.reset_index(drop=True) if isinstance(X, pd.DataFrame) else X


def validate_positional(X, duplicates):
    """:func:`~trajmoe.schema.validate_visits` of :func:`positional` X, whose errors name X's own
    row labels (not the positions the check saw).

    Raises
    ------
    SchemaError
        As :func:`~trajmoe.schema.validate_visits` of X itself.
    """
    try:
        # exact duplicates ranked by X's labels, not by the positions the check sees
        return validated_visits(positional(X), duplicates, X.index if isinstance(X, pd.DataFrame) else None)
    except SchemaError:
        if isinstance(X, pd.DataFrame) and not X.index.equals(pd.RangeIndex(len(X))):
            validate_visits(X, duplicates=duplicates)    # the same check on X: the same error, X's labels
        raise


def cell_labels(city, ix, iy):
    """Labels ``"<city>:<ix>_<iy>"`` that name cells unambiguously across cities.

    Parameters
    ----------
    city : str or array-like of str, shape (n,)
    ix, iy : array-like of int, shape (n,)

    Returns
    -------
    ndarray of object (str), shape (n,)
    """
    ix = np.asarray(ix).astype(str)
    iy = np.asarray(iy).astype(str)
    city = np.broadcast_to(np.asarray(city, dtype=object), ix.shape).astype(str)
    return np.char.add(np.char.add(np.char.add(city, ":"), np.char.add(ix, "_")), iy).astype(object)


def _weighted_median(values, weights):
    """``np.median`` of ``values`` repeated ``weights`` times (exactly numpy's value)."""
    order = np.argsort(values, kind="stable")
    ends = np.cumsum(weights[order])
    n = int(ends[-1])
    pick = values[order][np.searchsorted(ends, [(n - 1) // 2, n // 2], side="right")]
    return float(np.median(pick))


def _weighted_centre(lat, lon, weights):
    """:func:`trajmoe.spatial.robust_centre` of points repeated ``weights`` times (outlier_mask
    without a centre: null island only)."""
    keep = ~outlier_mask(lat, lon, None)
    if not keep.any():
        raise ValueError(f"all {int(weights.sum())} points lie at (0, 0), 'null island', a placeholder for a "
                         "missing position: there is no city to project.")
    lat, lon, weights = lat[keep], lon[keep], weights[keep]
    clat, clon = _weighted_median(lat, weights), wrap_longitude(_weighted_median(continuous_longitudes(lon), weights))
    near = distance_to(lat, lon, (clat, clon)) <= OUTLIER_DISTANCE
    if near.any():
        clat = _weighted_median(lat[near], weights[near])
        clon = wrap_longitude(_weighted_median(continuous_longitudes(lon[near]), weights[near]))
    return clat, clon


def _all_outliers(city, n_out, grid):
    """The SchemaError of a city whose visits are all outliers: a city of nothing, on whose
    empty tables every later call would fail."""
    return SchemaError(
        f"city {city!r}: all {n_out} visits lie farther than {OUTLIER_DISTANCE / 1000:.0f} km from the city's centre "
        f"{tuple(round(c, 4) for c in grid.centre)} (the median of its points), so none is left to lay a grid on. "
        f"The points are places far apart under one city name: give each its own '{CITY}' value.")


def _merge_counts(previous, frame, columns):
    """Distinct rows of ``columns`` with a ``n`` column of counts, ``previous`` added."""
    counts = frame.groupby(columns, sort=False, dropna=False).size().rename("n").reset_index()
    if previous is not None:
        counts = pd.concat([previous, counts]).groupby(columns, sort=False, dropna=False)["n"].sum().reset_index()
    return counts


class ChunkedEncoder:
    """A :class:`~trajmoe.SpatialSemanticEncoder` fitted chunk by chunk, exactly as by one fit.

    ``partial_fit`` keeps per city only what the encoder's tables follow from: the distinct
    coordinates (lat/lon, or x/y cells) with their numbers of visits, the distinct visited
    venues, the POI frame rows and the numbers of duplicate rows; :attr:`encoder_` then lays the
    same grid (robust centre by weighted medians), drops the same outliers, takes the same
    region (weighted quantiles) and counts the same visits as ``encoder.fit(all chunks,
    pois=all POIs)``. Memory grows with the distinct coordinates, not with the visits: for
    check-ins the venues, for gridded data the cells (raw GPS fixes should be snapped, or
    gridded as x/y, first).

    The encoder's own ``partial_fit`` is different on purpose: it extends a fitted encoder
    whose grid and coordinate scaling a trained network relies on.

    Parameters
    ----------
    encoder : SpatialSemanticEncoder or None, default None
        Template (cloned); None = the default encoder.

    Attributes
    ----------
    encoder_ : SpatialSemanticEncoder
        The fitted encoder (built on access from the statistics so far).
    n_chunks_ : int

    Raises
    ------
    ValueError
        From ``partial_fit``, if a user of a city appears in two chunks (each chunk must hold
        all the visits of its users: exact duplicate rows and windows are found within
        chunks), or a city changes location form (lat/lon against x/y) between chunks.

    Notes
    -----
    The rows of a table's ``venues`` frame are the same as ``fit``'s, possibly in another order
    (sorted here); every array of the tables is identical.

    Examples
    --------
    >>> chunked = ChunkedEncoder()                                  # doctest: +SKIP
    >>> for chunk in chunks:                                         # doctest: +SKIP
    ...     chunked.partial_fit(chunk)
    >>> chunked.encoder_.cities_["nyc"].n_locations                  # doctest: +SKIP
    """

    def __init__(self, encoder=None):
        self.encoder = encoder

    def partial_fit(self, X, y=None, pois=None):
        """Add the visits of one chunk (and, optionally, POI rows).

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)
            Canonical visit frame holding all visits of its users.
        y : None
            Ignored.
        pois : DataFrame of shape (n_pois, n_columns), optional
            POI rows (any chunk may bring some; they are put together as one frame).

        Returns
        -------
        self

        Raises
        ------
        trajmoe.exceptions.SchemaError
            If X or ``pois`` does not follow the data model (the message names the column and
            the rows), or rows without lat/lon lack x/y cells.
        ValueError
            If a user of X was in an earlier chunk of the same city, or a city's chunks give
            its locations in different forms (lat/lon and x/y).

        Notes
        -----
        Atomic: a refused chunk leaves the encoder as it was (none of its cities is kept), so
        that the corrected chunk can be given again.
        """
        first = not hasattr(self, "_stats")
        template = (clone(self.encoder) if self.encoder is not None else SpatialSemanticEncoder()) if first \
            else self._template
        if template.categories != "taxonomy":
            X = map_frame_categories(X, POI_CATEGORY, template.categories, unmapped="keep")
            pois = map_frame_categories(pois, CATEGORY, template.categories, unmapped="keep")
        visits = validate_positional(X, "drop")
        duplicates = _duplicates_per_city(X, visits)
        pois = None if pois is None else validate_pois(pois)
        stats, users = ({}, {}) if first else (self._stats, self._users)
        # every city of the chunk checked and counted before any is kept: a refused chunk leaves
        # the encoder as it was, so that the corrected chunk can be given again
        updates = {city: self._updated_city(stats.get(city), users.get(city, set()), city, rows,
                                            duplicates.get(city, 0))
                   for city, rows in visits.groupby(CITY, sort=False)}
        if first:
            self._template, self._stats, self._pois, self._users, self.n_chunks_ = template, stats, [], users, 0
        for city, (city_users, city_stats) in updates.items():
            self._users[city] = self._users.get(city, set()) | city_users
            self._stats[city] = city_stats
        if pois is not None:
            self._pois.append(pois)
        self.n_chunks_ += 1
        self._n_features_in = X.shape[1]
        self.__dict__.pop("_encoder", None)
        return self

    @staticmethod
    def _updated_city(stats, seen, city, rows, n_duplicates):
        """The users of ``rows`` (a set) and the city's statistics ``stats`` (None for a new
        city) with ``rows`` added, as a new dict; ``stats`` is not changed.

        Raises
        ------
        ValueError
            If a user of ``rows`` is in ``seen`` (an earlier chunk), or the location form
            (lat/lon or x/y) differs from the earlier chunks'.
        SchemaError
            If rows without lat/lon lack x/y cells.
        """
        users = pd.unique(rows[USER])
        again = seen.intersection(users)
        if again:
            named = [u.item() if isinstance(u, np.generic) else u for u in sorted(again, key=str)[:5]]
            raise ValueError(f"city {city!r}: users {named} appear in two chunks; each chunk "
                             "must hold all the visits of its users (split the data by user).")
        latlon = LAT in rows and rows[LAT].notna().all()
        stats = stats or {"latlon": latlon, "points": None, "venues": [], "duplicates": 0}
        if stats["latlon"] != latlon:
            raise ValueError(f"city {city!r}: some chunks give lat/lon, others x/y cells; give every visit of a "
                             "city the same location form.")
        point_cols = [LAT, LON] if latlon else [X, Y]
        if not latlon and not all(c in rows and rows[c].notna().all() for c in point_cols):
            raise SchemaError(f"City {city!r}: rows without '{LAT}'/'{LON}' need '{X}'/'{Y}' grid cells.")
        venues = stats["venues"]
        if POI_CATEGORY in rows:
            cols = [c for c in (LAT, LON, X, Y, "venue_id") if c in rows]
            chunk = rows[cols].assign(cat=_category_index(city, rows[POI_CATEGORY].to_numpy()))
            venues = [pd.concat([*venues, chunk[chunk["cat"] >= 0]]).drop_duplicates()]
        return set(users), {"latlon": latlon, "points": _merge_counts(stats["points"], rows[point_cols], point_cols),
                            "venues": venues, "duplicates": stats["duplicates"] + int(n_duplicates)}

    @property
    def encoder_(self):
        """The :class:`SpatialSemanticEncoder` of every chunk so far, fitted as by one ``fit``
        on them all (built on first access after a chunk, then cached).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before the first ``partial_fit``.
        """
        if not hasattr(self, "_stats"):
            raise NotFittedError("ChunkedEncoder has no fitted encoder before the first partial_fit.")
        if "_encoder" not in self.__dict__:
            self._encoder = self._build()
        return self._encoder

    def _build(self):
        encoder = clone(self._template)
        encoder.cities_ = {}
        poi_frame = pd.concat(self._pois, ignore_index=True) if self._pois else None
        for city, stats in sorted(self._stats.items()):        # one fit's order: by name
            pois = None
            if poi_frame is not None:
                pois = poi_frame[poi_frame[CITY] == city]
                pois = pois if len(pois) else None
            encoder.cities_[city] = self._city(encoder, city, stats, pois)
        encoder.feature_names_out_ = np.array([f"poi_{c}" for c in TAXONOMY] + ["x_z", "y_z", "popularity"],
                                              dtype=object)
        encoder.n_features_in_ = self._n_features_in
        return encoder

    @staticmethod
    def _city(encoder, city, stats, pois):
        """The city's table, as ``SpatialSemanticEncoder._fit_city`` lays it from all rows."""
        points = stats["points"]
        weights = points["n"].to_numpy(np.int64)
        n_out = 0
        if stats["latlon"]:
            lat, lon = points[LAT].to_numpy(float), points[LON].to_numpy(float)
            try:
                centre = _weighted_centre(lat, lon, weights)
                crs = utm_crs_for([centre[0]], [centre[1]]).to_string()   # the zone of the centre itself
            except ValueError as exc:
                raise SchemaError(f"city {city!r}: no grid can be laid, {exc}") from None
            grid = CityGrid(float(encoder.cell_size), crs, centre)
            out = grid.outliers(lat, lon)
            n_out = int(weights[out].sum())
            if out.all():
                raise _all_outliers(city, n_out, grid)
            points, weights = points[~out], weights[~out]
        else:
            grid = CityGrid(float(encoder.cell_size), None)
        visit_cells = encoder._cells(grid, points, city)
        n_poi_out = 0
        venues = None
        if pois is not None:
            pois, n_poi_out = encoder._drop_outliers(city, grid, pois, "POIs")
            cat_index = _category_index(city, pois[CATEGORY].to_numpy())
            known = cat_index >= 0
            poi_cells = encoder._cells(grid, pois, city)[known]
            poi_weights = (pois["count"].to_numpy(np.float64) if "count" in pois else np.ones(len(pois)))[known]
            cat_index = cat_index[known]
        else:
            venues = _venue_frame(grid, stats["venues"], city, encoder)
            poi_cells = venues[["ix", "iy"]].to_numpy(np.int64)
            cat_index = venues["cat"].to_numpy(np.int64)
            poi_weights = np.ones(len(venues))
        excluded = {"duplicate_visits": stats["duplicates"], "outlier_visits": n_out, "outlier_pois": n_poi_out}
        return encoder._city_table(city, grid, visit_cells, poi_cells, cat_index, poi_weights, venues, excluded,
                                   visit_weights=weights)


def _venue_frame(grid, parts, city, encoder):
    """The distinct visited venues as ``_fit_city`` lists them (``ix``, ``iy``, the venue
    columns, ``cat``), in sorted order."""
    raw = parts[0] if parts else pd.DataFrame({"cat": np.zeros(0, np.int64)})
    if grid.is_projected and len(raw):
        raw = raw[~grid.outliers(raw[LAT].to_numpy(float), raw[LON].to_numpy(float))]
    cells = encoder._cells(grid, raw, city) if len(raw) else np.zeros((0, 2), np.int64)
    venues = pd.DataFrame({"ix": cells[:, 0], "iy": cells[:, 1]})
    if parts:
        venue_cols = ["venue_id"] if "venue_id" in raw else [c for c in (LAT, LON) if c in raw]
        for col in venue_cols:
            venues[col] = raw[col].to_numpy()
    venues["cat"] = raw["cat"].to_numpy(np.int64)
    venues = venues.drop_duplicates()
    return venues.sort_values(list(venues.columns), kind="stable").reset_index(drop=True)
