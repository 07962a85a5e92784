"""Projection of WGS84 coordinates onto a city's metric grid (pyproj).

A city's grid is a square lattice of ``cell_size`` metres laid in a local metric
projection of that city: the UTM zone of the city's robust centre (:func:`robust_centre`,
rounded to whole degrees, so that samples of a city next to a zone border, such as London
at 0 degrees, get the same zone). Cell indices are absolute in that projection
(``ix = floor(easting / cell_size)``), so they do not depend on which visits a grid was
fitted on. Already-gridded data (YJMob100K) keep their own ``x``/``y`` indices.

Outliers (:func:`outlier_mask`) are points at "null island" (0, 0), a placeholder for a
missing position, and points farther than :data:`OUTLIER_DISTANCE` metres from the city's
robust centre (a lost minus sign, swapped digits, a point on another continent); they
neither choose the zone nor become cells.

References
----------
Han et al., "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human Mobility
Modeling", arXiv 2505.18670, section 3 (500 m grid cells); docs/method.rst, "Task, grid and windows".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import CRS, Transformer

from ._constants import MAX_CELL_INDEX

__all__ = ["CityGrid", "utm_crs_for", "robust_centre", "outlier_mask", "distance_to", "OUTLIER_DISTANCE",
           "UTM_LATITUDES", "NULL_ISLAND_DEGREES", "continuous_longitudes", "wrap_longitude"]

#: Points farther than this from their city's robust centre are outliers (metres): farther
#: than a day trip, and well beyond the largest metro areas of the shipped data (the Gowalla
#: Los Angeles box spans 130 km from its centre).
OUTLIER_DISTANCE = 500_000.0
#: Latitudes (degrees) that the UTM zones cover; beyond them (the polar caps) UTM is undefined.
UTM_LATITUDES = (-80.0, 84.0)
#: Half-width (degrees) of the box around (0, 0) whose points are "null island".
NULL_ISLAND_DEGREES = 1e-6
_EARTH_RADIUS = 6_371_008.8  # metres (mean radius)


def _points(lat, lon):
    lat = np.asarray(lat, dtype=float).ravel()
    lon = np.asarray(lon, dtype=float).ravel()
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon must have the same length, got {lat.size} and {lon.size}.")
    return lat, lon


def distance_to(lat, lon, centre):
    """Great-circle (haversine, mean Earth radius) distance of points to a centre.

    Parameters
    ----------
    lat, lon : array-like of float, shape (n,)
        WGS84 degrees.
    centre : (float, float)
        ``(lat, lon)`` in degrees.

    Returns
    -------
    ndarray of float64, shape (n,)
        Metres.
    """
    lat, lon = _points(lat, lon)
    return _distance(lat, lon, centre[0], centre[1])


def _distance(lat, lon, clat, clon):
    la, lo, cla, clo = np.radians(lat), np.radians(lon), np.radians(clat), np.radians(clon)
    h = np.sin((la - cla) / 2) ** 2 + np.cos(la) * np.cos(cla) * np.sin((lo - clo) / 2) ** 2
    return 2 * _EARTH_RADIUS * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def continuous_longitudes(lon):
    """Longitudes made continuous across the antimeridian, for medians and means.

    The points are cut on the circle at the widest gap between them: where that gap contains the
    antimeridian (every city that does not straddle it), the longitudes come back unchanged;
    otherwise those west of the cut get 360 more, so that a city around 180 degrees (Fiji:
    179.99 and -179.99) has its median between its points, not at 0 in the Atlantic.

    Parameters
    ----------
    lon : ndarray of float64, shape (n,)
        WGS84 degrees in -180..180.

    Returns
    -------
    ndarray of float64, shape (n,)
        Degrees, some possibly above 180 (wrap a result with ``(x + 180) % 360 - 180``).
    """
    if lon.size < 2:
        return lon
    ordered = np.sort(lon)
    gaps = np.diff(ordered)
    widest = int(np.argmax(gaps))
    if gaps[widest] <= ordered[0] + 360.0 - ordered[-1]:        # the widest gap holds the antimeridian
        return lon
    return np.where(lon <= ordered[widest], lon + 360.0, lon)


def wrap_longitude(lon):
    """A longitude of :func:`continuous_longitudes` back in -180..180 (unchanged if it is).

    Parameters
    ----------
    lon : float
        Degrees.

    Returns
    -------
    float
        Degrees in -180..180.
    """
    return lon if -180.0 <= lon <= 180.0 else float((lon + 180.0) % 360.0 - 180.0)


def _null_island(lat, lon):
    return (np.abs(lat) <= NULL_ISLAND_DEGREES) & (np.abs(lon) <= NULL_ISLAND_DEGREES)


def robust_centre(lat, lon):
    """The centre of a city's points that a few stray points cannot move.

    The coordinate-wise median of the points that are not at null island (0, 0), then the
    median again of those within :data:`OUTLIER_DISTANCE` of it; longitudes are taken on the
    circle (:func:`continuous_longitudes`), so a city around the antimeridian has its centre there.

    Parameters
    ----------
    lat, lon : array-like of float, shape (n,)
        WGS84 degrees.

    Returns
    -------
    (lat, lon) : tuple of float
        Degrees.

    Raises
    ------
    ValueError
        If no point is given, or every point is at null island.
    """
    lat, lon = _points(lat, lon)
    if lat.size == 0:
        raise ValueError("at least one point is needed to find a city's centre (and its UTM zone).")
    keep = ~_null_island(lat, lon)
    if not keep.any():
        raise ValueError(f"all {lat.size} points lie at (0, 0), 'null island', a placeholder for a "
                         "missing position: there is no city to project.")
    lat, lon = lat[keep], lon[keep]
    flat = continuous_longitudes(lon)                   # a city around 180 degrees: not at 0
    clat, clon = float(np.median(lat)), wrap_longitude(float(np.median(flat)))
    near = _distance(lat, lon, clat, clon) <= OUTLIER_DISTANCE
    if near.any():
        clat, clon = float(np.median(lat[near])), wrap_longitude(float(np.median(continuous_longitudes(lon[near]))))
    return clat, clon


def outlier_mask(lat, lon, centre):
    """Which points are outliers of a city: at null island, or far from its centre.

    Parameters
    ----------
    lat, lon : array-like of float, shape (n,)
        WGS84 degrees.
    centre : (float, float) or None
        The city's ``(lat, lon)`` centre in degrees (:func:`robust_centre`); None checks
        null island only.

    Returns
    -------
    ndarray of bool, shape (n,)
        True for points within ``NULL_ISLAND_DEGREES`` of (0, 0) or farther than
        :data:`OUTLIER_DISTANCE` metres from ``centre``.
    """
    lat, lon = _points(lat, lon)
    out = _null_island(lat, lon)
    if centre is not None:
        out |= _distance(lat, lon, centre[0], centre[1]) > OUTLIER_DISTANCE
    return out


def utm_crs_for(lat, lon):
    """Return the WGS84 UTM zone CRS of a city's points.

    The zone is that of the points' robust centre (:func:`robust_centre`) rounded to whole
    degrees: zone ``floor((lon + 180) / 6) + 1``, north (EPSG:326zz) for a rounded latitude
    >= 0, else south (EPSG:327zz); the Norway and Svalbard exceptions are not applied. The
    rounding keeps the zone of a city whose centre lies near a zone border (London, lon -0.1)
    the same for every sample of its points: the zone changes only where the centre crosses
    half a degree west of a border.

    Parameters
    ----------
    lat, lon : array-like of float, shape (n,)
        WGS84 latitude and longitude in degrees.

    Returns
    -------
    crs : pyproj.CRS
        The projected CRS (units: metres).

    Raises
    ------
    ValueError
        If no point is given, every point is at null island, or the centre lies outside the
        latitudes UTM covers (:data:`UTM_LATITUDES`, -80 to 84 degrees).
    """
    clat, clon = robust_centre(lat, lon)
    lo, hi = UTM_LATITUDES
    if not lo <= clat <= hi:
        raise ValueError(
            f"the points are centred at latitude {clat:.4f}, outside the latitudes UTM covers "
            f"({lo:g}..{hi:g} degrees): the polar caps have no UTM zone. Give such data as x/y grid "
            "cells, or drop those points.")
    rlat, rlon = np.floor(clat + 0.5), np.floor(clon + 0.5)
    zone = int(np.floor((rlon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if rlat >= 0 else 32700) + zone)


@dataclass(frozen=True)
class CityGrid:
    """The square grid of one city.

    Parameters
    ----------
    cell_size : float
        Side of a cell in metres (500 in the paper).
    crs : str or None
        Projected CRS of the grid as a WKT/authority string (``"EPSG:32618"``), or None
        for an already-gridded city whose visits come as ``x``/``y`` cell indices.
    centre : tuple of (float, float) or None, default None
        The city's robust centre ``(lat, lon)`` in degrees (:func:`robust_centre`), against
        which later points are checked for outliers (:meth:`outliers`); None for an x/y grid,
        or a grid restored without it (then only null island counts as an outlier).

    Notes
    -----
    Instances are immutable and picklable (they store the CRS as a string and build
    pyproj transformers on demand).
    """

    cell_size: float
    crs: str | None = None
    centre: tuple | None = None

    @classmethod
    def from_points(cls, lat, lon, cell_size=500.0):
        """Grid in the UTM zone of the given points (see :func:`utm_crs_for`), with their
        robust centre stored.

        Raises
        ------
        ValueError
            As :func:`utm_crs_for`.
        """
        crs = utm_crs_for(lat, lon).to_string()
        return cls(float(cell_size), crs, robust_centre(lat, lon))

    def outliers(self, lat, lon):
        """Outlier mask of WGS84 points for this grid (:func:`outlier_mask` around
        :attr:`centre`); all False for an x/y grid.

        Returns
        -------
        ndarray of bool, shape (n,)
        """
        if not self.is_projected:
            return np.zeros(np.asarray(lat).size, dtype=bool)
        return outlier_mask(lat, lon, self.centre)

    @property
    def is_projected(self):
        """True when the grid projects lat/lon, False for given x/y indices."""
        return self.crs is not None

    def _forward(self):
        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    def cells_of(self, lat, lon):
        """Cell indices of WGS84 points.

        Parameters
        ----------
        lat, lon : array-like of float, shape (n,)
            Degrees.

        Returns
        -------
        ix, iy : ndarray of int64, shape (n,)
            Column and row of the cell holding each point. Points the projection cannot
            place (far outside the zone: not finite) or beyond ``2**30 - 1`` cells are
            clipped to that magnitude (such points are outliers, :meth:`outliers`).

        Raises
        ------
        ValueError
            If the grid is not projected (an x/y city has no lat/lon).
        """
        if not self.is_projected:
            raise ValueError("This city's grid was given as x/y cell indices; it has no lat/lon projection.")
        east, north = self._forward().transform(np.asarray(lon, float), np.asarray(lat, float))
        limit = float(MAX_CELL_INDEX - 1)

        def index(metres):
            cells = np.floor(np.asarray(metres, float) / self.cell_size)
            return np.clip(np.nan_to_num(cells, nan=limit, posinf=limit, neginf=-limit), -limit, limit).astype(np.int64)

        return index(east), index(north)

    def centroid_metres(self, ix, iy):
        """Centroids of cells in the grid's metric frame.

        Parameters
        ----------
        ix, iy : array-like of int, shape (n,)

        Returns
        -------
        ndarray of float64, shape (n, 2)
            Easting/northing in metres (for an x/y city: ``index * cell_size``).
        """
        offset = 0.5 if self.is_projected else 0.0
        return np.column_stack([(np.asarray(ix, float) + offset) * self.cell_size,
                                (np.asarray(iy, float) + offset) * self.cell_size])

    def centroid_lonlat(self, ix, iy):
        """Centroids of cells as WGS84 degrees.

        Returns
        -------
        lat, lon : ndarray of float64, shape (n,)
            NaN for an x/y city (no published coordinates).
        """
        n = len(np.asarray(ix))
        if not self.is_projected:
            return np.full(n, np.nan), np.full(n, np.nan)
        xy = self.centroid_metres(ix, iy)
        lon, lat = self._forward().transform(xy[:, 0], xy[:, 1], direction="INVERSE")
        return np.asarray(lat), np.asarray(lon)
