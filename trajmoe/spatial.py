"""Projection of WGS84 coordinates onto a city's metric grid (pyproj).

A city's grid is a square lattice of ``cell_size`` metres laid in a local metric
projection of that city: the UTM zone of the city's mean coordinate. Cell indices are
absolute in that projection (``ix = floor(easting / cell_size)``), so they do not depend
on which visits a grid was fitted on. Already-gridded data (YJMob100K) keep their own
``x``/``y`` indices.

References
----------
Han et al., "TrajMoE: Spatially-Aware Mixture of Experts for Unified Human Mobility
Modeling", arXiv 2505.18670, section 3 (500 m grid cells); MODEL.md section 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import CRS, Transformer
from pyproj.aoi import AreaOfInterest
from pyproj.database import query_utm_crs_info

__all__ = ["CityGrid", "utm_crs_for"]


def utm_crs_for(lat, lon):
    """Return the WGS84 UTM zone CRS that contains the mean of the given points.

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
        If no point is given.
    """
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    if lat.size == 0:
        raise ValueError("utm_crs_for needs at least one point to choose a UTM zone.")
    mlat, mlon = float(np.mean(lat)), float(np.mean(lon))
    infos = query_utm_crs_info(
        datum_name="WGS 84",
        area_of_interest=AreaOfInterest(mlon, mlat, mlon, mlat),
    )
    return CRS.from_epsg(infos[0].code)


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

    Notes
    -----
    Instances are immutable and picklable (they store the CRS as a string and build
    pyproj transformers on demand).
    """

    cell_size: float
    crs: str | None = None

    @classmethod
    def from_points(cls, lat, lon, cell_size=500.0):
        """Grid in the UTM zone of the given points (see :func:`utm_crs_for`)."""
        return cls(float(cell_size), utm_crs_for(lat, lon).to_string())

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
            Column and row of the cell holding each point.

        Raises
        ------
        ValueError
            If the grid is not projected (an x/y city has no lat/lon).
        """
        if not self.is_projected:
            raise ValueError("This city's grid was given as x/y cell indices; it has no lat/lon projection.")
        east, north = self._forward().transform(np.asarray(lon, float), np.asarray(lat, float))
        return (np.floor(east / self.cell_size).astype(np.int64),
                np.floor(north / self.cell_size).astype(np.int64))

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
