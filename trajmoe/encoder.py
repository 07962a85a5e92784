"""The spatial semantic encoder: one feature space for the locations of every city.

Every location is a grid cell (500 m by default) described by what is there (POI counts
over the shared functional taxonomy), where it is (centroid coordinates z-scored within
the city) and how popular it is (a rank bin of its training visit count).

References
----------
Han et al., "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human Mobility
Modeling", arXiv 2505.18670, section 3.1 (spatial semantic encoder); MODEL.md section 2.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .schema import (CATEGORY, CITY, COUNT, LAT, LON, POI_CATEGORY, X, Y,
                     DataWarning, SchemaError, validate_pois, validate_visits)
from .spatial import CityGrid
from .taxonomy import TAXONOMY

__all__ = ["SpatialSemanticEncoder", "CityTable", "popularity_bins", "POPULARITY_EDGES", "MAX_REGION_CELLS",
           "REGION_QUANTILE"]

#: Upper edges of the popularity rank bins (share of cells ranked above), MODEL.md section 2.
POPULARITY_EDGES = (0.01, 0.05, 0.10, 0.20, 0.40, 0.60, 0.80)
#: Share of a city's POI and visit cells left out of its region's box at each end (per axis),
#: so that a few stray points do not stretch the box.
REGION_QUANTILE = 0.001
#: Largest region box laid for one city, in cells (25,000 km2 at 500 m; a YJMob100K city is
#: 200 x 200 = 40,000 cells).
MAX_REGION_CELLS = 100_000
_KEY_OFFSET = np.int64(2**30)
_KEY_SHIFT = 31


def cell_keys(ix, iy):
    """One int64 per cell (|ix|, |iy| < 2**30), increasing with (ix, iy)."""
    return ((np.asarray(ix, np.int64) + _KEY_OFFSET) << _KEY_SHIFT) | (np.asarray(iy, np.int64) + _KEY_OFFSET)


def cells_of_keys(keys):
    """Inverse of :func:`cell_keys`: int64 array of shape (n, 2) of (ix, iy)."""
    keys = np.asarray(keys, np.int64)
    return np.column_stack([(keys >> _KEY_SHIFT) - _KEY_OFFSET, (keys & ((1 << _KEY_SHIFT) - 1)) - _KEY_OFFSET])


def popularity_bins(visit_counts, edges=POPULARITY_EDGES):
    """Rank bins of cells by visit count, 1 (most popular) .. len(edges) + 1.

    A cell's rank share is the fraction of the city's cells with strictly more visits,
    so tied cells (e.g. all never-visited cells) share one bin. Share < 1 % -> bin 1,
    1-5 % -> 2, 5-10 % -> 3, 10-20 % -> 4, 20-40 % -> 5, 40-60 % -> 6, 60-80 % -> 7,
    >= 80 % -> 8. Bin 0 is reserved for padding.

    Parameters
    ----------
    visit_counts : array-like of int, shape (n_cells,)
        Training visits per cell.
    edges : sequence of float, default POPULARITY_EDGES
        Increasing upper edges of the bins, as shares in (0, 1).

    Returns
    -------
    ndarray of int64, shape (n_cells,)
        Bin per cell, in 1..len(edges) + 1.

    References
    ----------
    MODEL.md section 2 (popularity rank bins; computed on training data only).
    """
    counts = np.asarray(visit_counts)
    n = counts.size
    if n == 0:
        return np.zeros(0, np.int64)
    ordered = np.sort(counts)
    above = n - np.searchsorted(ordered, counts, side="right")
    share = above / n
    return np.searchsorted(np.asarray(edges), share, side="right").astype(np.int64) + 1


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
    """

    grid: CityGrid
    cells: np.ndarray
    poi_counts: np.ndarray
    visit_counts: np.ndarray
    coord_mean: np.ndarray
    coord_std: np.ndarray
    venues: pd.DataFrame | None = None
    n_unseen: int = 0

    @property
    def n_locations(self):
        return len(self.cells)

    @property
    def keys(self):
        return cell_keys(self.cells[:, 0], self.cells[:, 1])

    def coords(self, cells=None):
        """Z-scored centroid coordinates, float32 (n, 2)."""
        cells = self.cells if cells is None else cells
        xy = self.grid.centroid_metres(cells[:, 0], cells[:, 1])
        return ((xy - self.coord_mean) / self.coord_std).astype(np.float32)

    @property
    def popularity(self):
        """Popularity bin per location, int64 (n_locations,) in 1..8."""
        fitted = self.visit_counts[:self.n_locations - self.n_unseen]
        return np.concatenate([popularity_bins(fitted), np.full(self.n_unseen, self.unseen_popularity, np.int64)])

    @property
    def unseen_popularity(self):
        """Bin that a never-visited cell gets in this city."""
        fitted = self.visit_counts[:self.n_locations - self.n_unseen]
        return int(popularity_bins(np.append(fitted, 0))[-1])

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
                         self.coord_mean, self.coord_std, self.venues, self.n_unseen + len(new))


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
    - ``popularity``: rank bin 1..8 of the cell's training visit count (see
      :func:`popularity_bins`).

    Parameters
    ----------
    cell_size : float, default 500.0
        Side of a grid cell in metres (lat/lon input only; x/y input is already gridded).
    region_margin : float or None, default 2000.0
        Metres added on every side of the box of a city's POIs and visits; rounded up to
        whole cells. None: the closed vocabulary of earlier versions (only the cells that
        hold a POI or a training visit), under which every other cell is a guaranteed miss.
        Where the box would hold more than :data:`MAX_REGION_CELLS` cells (a city in pieces
        far apart), the region is instead every cell within ``region_margin`` of a cell
        with a POI or a visit.

    Attributes
    ----------
    cities_ : dict of str -> CityTable
        Fitted locations per city, in order of registration.
    feature_names_out_ : ndarray of str, shape (37,)
    n_features_in_ : int
        Number of columns of the frame seen in fit.

    See Also
    --------
    trajmoe.TrajMoERegressor : uses this encoder for its location features.

    References
    ----------
    Han et al., arXiv 2505.18670, section 3.1; MODEL.md section 2.

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

    def __init__(self, cell_size=500.0, region_margin=2000.0):
        self.cell_size = cell_size
        self.region_margin = region_margin

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
            If ``cell_size`` is not a positive number.
        """
        size = self.cell_size
        if isinstance(size, bool) or not isinstance(size, numbers.Real) or not np.isfinite(size) or size <= 0:
            raise ValueError(f"cell_size must be a finite positive number of metres, got {size!r}.")
        margin = self.region_margin
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, numbers.Real)
                                   or not np.isfinite(margin) or margin < 0):
            raise ValueError(f"region_margin must be None or a finite number of metres >= 0, got {margin!r}.")
        self.cities_ = {}
        self._add(X, pois)
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
        """
        if not hasattr(self, "cities_"):
            return self.fit(X, y, pois=pois)
        return self._add(X, pois)

    def _add(self, X, pois):
        visits = validate_visits(positional(X))
        poi_frame = validate_pois(pois) if pois is not None else None
        if poi_frame is not None:
            stray = poi_frame.loc[~poi_frame[CITY].isin(visits[CITY].unique()), CITY].value_counts()
            if len(stray):
                warnings.warn(
                    f"POIs of cities without visits in X are not used: { {str(k): int(v) for k, v in stray.items()} } (rows per city). "
                    f"Cities of X: {sorted(visits[CITY].unique())}; set the POI frame's '{CITY}' column "
                    "to the matching city names.", DataWarning, stacklevel=3)
        for city, rows in visits.groupby(CITY, sort=False):
            city_pois = None
            if poi_frame is not None:
                city_pois = poi_frame[poi_frame[CITY] == city]
                city_pois = city_pois if len(city_pois) else None
            self.cities_[city] = self._fit_city(city, rows, city_pois, self.cities_.get(city))
        self.feature_names_out_ = np.array(
            [f"poi_{c}" for c in TAXONOMY] + ["x_z", "y_z", "popularity"], dtype=object)
        return self

    def _grid_for(self, frame, previous):
        if previous is not None:
            return previous.grid
        if LAT in frame and frame[LAT].notna().all():
            return CityGrid.from_points(frame[LAT], frame[LON], self.cell_size)
        return CityGrid(float(self.cell_size), None)

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

    def _fit_city(self, city, visits, pois, previous):
        grid = self._grid_for(visits, previous)
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

        known = cell_keys(*previous.cells.T) if previous is not None else np.zeros(0, np.int64)
        region = self._region(city, grid, np.concatenate([visit_cells, poi_cells]))
        all_keys = np.unique(np.concatenate([known, cell_keys(*visit_cells.T), cell_keys(*poi_cells.T), region]))
        cells = cells_of_keys(all_keys)

        visit_counts = np.bincount(np.searchsorted(all_keys, cell_keys(*visit_cells.T)), minlength=len(cells))
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
        return CityTable(grid, cells, poi_counts, visit_counts.astype(np.int64), mean, std, venues)

    def _region(self, city, grid, cells):
        """Keys of the region's cells: the quantile-trimmed box of ``cells`` widened by
        ``region_margin``, or, where that box would exceed :data:`MAX_REGION_CELLS`, the
        cells within ``region_margin`` of one of ``cells``; empty for the closed vocabulary."""
        if self.region_margin is None or not len(cells):
            return np.zeros(0, np.int64)
        pad = int(np.ceil(self.region_margin / grid.cell_size))
        lo = np.floor(np.quantile(cells, REGION_QUANTILE, axis=0)).astype(np.int64) - pad
        hi = np.ceil(np.quantile(cells, 1 - REGION_QUANTILE, axis=0)).astype(np.int64) + pad
        if np.prod((hi - lo + 1).astype(float)) <= MAX_REGION_CELLS:
            ix, iy = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
            return cell_keys(ix.ravel(), iy.ravel())
        # a city in far-apart pieces (a Flickr "Osaka" with a POI in Tokyo): widen each piece
        seen = cells_of_keys(np.unique(cell_keys(*cells.T)))
        step = np.arange(-pad, pad + 1)
        dx, dy = (a.ravel() for a in np.meshgrid(step, step, indexing="ij"))
        return np.unique(cell_keys((seen[:, :1] + dx).ravel(), (seen[:, 1:] + dy).ravel()))

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
        ValueError
            If X holds a city the encoder has not seen (fit or partial_fit it first).
        """
        check_is_fitted(self, "cities_")
        visits = validate_visits(positional(X))
        unknown = sorted(set(visits[CITY].unique()) - set(self.cities_))
        if unknown:
            raise ValueError(
                f"Column '{CITY}' holds cities the encoder has not seen: {unknown}. Known cities: "
                f"{list(self.cities_)}. Register them with partial_fit first.")
        n = len(visits)
        city = np.empty(n, dtype=object)
        location = np.empty(n, np.int64)
        cells = np.empty((n, 2), np.int64)
        for name, rows in visits.groupby(CITY, sort=False):
            table = self.cities_[name]
            pos = rows.index.to_numpy()
            cells[pos] = self._cells(table.grid, rows, name)
            location[pos] = table.lookup(cells[pos, 0], cells[pos, 1])
            city[pos] = name
        return pd.DataFrame({CITY: city, "location_id": location,
                             "label": cell_labels(city, cells[:, 0], cells[:, 1]),
                             "ix": cells[:, 0], "iy": cells[:, 1]}, index=X.index)

    def transform(self, X):
        """Location features of every visit's cell.

        Parameters
        ----------
        X : DataFrame of shape (n_visits, n_columns)

        Returns
        -------
        ndarray of float64, shape (n_visits, 37)
            34 POI counts, 2 z-scored coordinates, 1 popularity bin (1..8; a cell outside
            the vocabulary has no POIs and the bin of a never-visited cell), in the row
            order of X. A DataFrame with :meth:`get_feature_names_out` columns under
            ``set_output(transform="pandas")``.
        """
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
            out[pos, -1] = np.where(known, table.popularity[np.maximum(ids, 0)], table.unseen_popularity)
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
        """
        located = self.locate(X)
        unseen = located[located["location_id"] < 0]
        if self.region_margin is None or not len(unseen):
            return self
        out = copy.copy(self)
        out.cities_ = dict(self.cities_)
        for city, rows in unseen.groupby(CITY, sort=False):
            out.cities_[city] = self.cities_[city].with_cells(rows[["ix", "iy"]].to_numpy(np.int64))
        return out

    def get_feature_names_out(self, input_features=None):
        """Names of the 37 per-visit features: ``poi_<category>`` x 34, ``x_z``, ``y_z``, ``popularity``."""
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
        KeyError
            If the city is unknown.
        """
        check_is_fitted(self, "cities_")
        if city not in self.cities_:
            raise KeyError(f"Unknown city {city!r}; known cities: {list(self.cities_)}.")
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


def positional(X):
    """X with a RangeIndex (row positions), so results can be put back in X's order."""
    return X.reset_index(drop=True) if isinstance(X, pd.DataFrame) else X


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
