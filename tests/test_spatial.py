"""Tests of trajmoe.spatial: UTM zone choice, 500 m cells, centroids (hand-checked values)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from trajmoe.spatial import CityGrid, utm_crs_for

GEOD = Geod(ellps="WGS84")

# Times Square, New York: UTM 18N easting 585632.97 m, northing 4512388.31 m (pyproj, checked
# by hand against the zone formula: zone = floor((-73.9855 + 180) / 6) + 1 = 18).
TIMES_SQ = (40.758, -73.9855)
# Melbourne CBD: UTM 55S (southern hemisphere -> EPSG:327xx), E 320704.45 m, N 5812911.70 m.
MELBOURNE = (-37.8136, 144.9631)
# Edinburgh: UTM 30N, E 488241.99 m, N 6200898.03 m.
EDINBURGH = (55.9533, -3.1883)


@pytest.mark.parametrize(
    "point, epsg",
    [(TIMES_SQ, "EPSG:32618"), (MELBOURNE, "EPSG:32755"), (EDINBURGH, "EPSG:32630"),
     ((35.68, 139.77), "EPSG:32654")],  # Tokyo: zone floor(319.77 / 6) + 1 = 54, north
)
def test_utm_zone_of_known_points(point, epsg):
    lat, lon = point
    assert utm_crs_for([lat], [lon]).to_string() == epsg


def test_utm_zone_uses_mean_of_points():
    # two points in zone 17 and 19: their mean (-75) lies in zone 18
    assert utm_crs_for([40.0, 40.0], [-79.0, -71.0]).to_string() == "EPSG:32618"


def test_utm_crs_for_needs_a_point():
    with pytest.raises(ValueError, match="at least one point"):
        utm_crs_for([], [])


@pytest.mark.parametrize(
    "point, epsg, cell",
    [(TIMES_SQ, "EPSG:32618", (1171, 9024)),      # 585632.97 / 500, 4512388.31 / 500
     (MELBOURNE, "EPSG:32755", (641, 11625)),     # 320704.45 / 500, 5812911.70 / 500
     (EDINBURGH, "EPSG:32630", (976, 12401))],    # 488241.99 / 500, 6200898.03 / 500
)
def test_known_point_projects_into_expected_cell(point, epsg, cell):
    grid = CityGrid.from_points([point[0]], [point[1]])
    assert grid.crs == epsg
    assert grid.cell_size == 500.0
    assert grid.is_projected
    ix, iy = grid.cells_of([point[0]], [point[1]])
    assert ix.dtype == np.int64 and iy.dtype == np.int64
    assert (int(ix[0]), int(iy[0])) == cell


def test_cell_size_changes_cells():
    grid = CityGrid(1000.0, "EPSG:32618")
    ix, iy = grid.cells_of([TIMES_SQ[0]], [TIMES_SQ[1]])
    assert (int(ix[0]), int(iy[0])) == (585, 4512)  # 585632.97 / 1000, 4512388.31 / 1000


def test_centroid_metres_projected_grid():
    grid = CityGrid(500.0, "EPSG:32618")
    xy = grid.centroid_metres([1171, 0], [9024, -2])
    np.testing.assert_allclose(xy, [[585750.0, 4512250.0], [250.0, -750.0]])


def test_centroid_metres_xy_grid_is_index_times_cell_size():
    grid = CityGrid(500.0, None)
    assert not grid.is_projected
    np.testing.assert_allclose(grid.centroid_metres([1, 200], [3, 7]), [[500.0, 1500.0], [100000.0, 3500.0]])


def test_xy_grid_has_no_lonlat():
    grid = CityGrid(500.0, None)
    lat, lon = grid.centroid_lonlat([1, 2], [3, 4])
    assert lat.shape == (2,) and np.isnan(lat).all() and np.isnan(lon).all()
    with pytest.raises(ValueError, match="x/y"):
        grid.cells_of([40.0], [-74.0])


def test_centroid_of_times_square_cell():
    grid = CityGrid(500.0, "EPSG:32618")
    lat, lon = grid.centroid_lonlat([1171], [9024])
    # the centroid (585750, 4512250) is 117 m east and 138 m south of the point: 181 m away
    _, _, dist = GEOD.inv(TIMES_SQ[1], TIMES_SQ[0], lon[0], lat[0])
    assert dist == pytest.approx(np.hypot(585750 - 585632.97, 4512250 - 4512388.31), rel=2e-3)
    # and it projects back into its own cell
    ix, iy = grid.cells_of(lat, lon)
    assert (int(ix[0]), int(iy[0])) == (1171, 9024)


@settings(max_examples=60, deadline=None)
@given(lat=st.floats(40.55, 40.9), lon=st.floats(-74.2, -73.7))
def test_centroid_is_within_half_cell_diagonal_of_any_point_of_the_cell(lat, lon):
    """Property: a point and its cell's centroid are at most sqrt(2) * 250 m = 354 m apart (UTM
    scale error in NYC is < 0.1 %), in particular within 500 m."""
    grid = CityGrid(500.0, "EPSG:32618")
    ix, iy = grid.cells_of([lat], [lon])
    clat, clon = grid.centroid_lonlat(ix, iy)
    _, _, dist = GEOD.inv(lon, lat, clon[0], clat[0])
    assert dist <= 354.0
    assert dist < 500.0
    back = grid.cells_of(clat, clon)
    assert (int(back[0][0]), int(back[1][0])) == (int(ix[0]), int(iy[0]))


def test_neighbouring_points_500m_apart_land_in_neighbouring_cells():
    grid = CityGrid(500.0, "EPSG:32618")
    # 600 m due east of Times Square (forward geodesic, azimuth 90 degrees)
    lon2, lat2, _ = GEOD.fwd(TIMES_SQ[1], TIMES_SQ[0], 90.0, 600.0)
    ix, iy = grid.cells_of([TIMES_SQ[0], lat2], [TIMES_SQ[1], lon2])
    # 585632.97 + ~600 m = ~586233 -> column 1172; same row 9024
    assert ix.tolist() == [1171, 1172]
    assert iy.tolist() == [9024, 9024]


def test_grid_is_frozen_and_picklable():
    grid = CityGrid.from_points([40.7], [-74.0])
    again = pickle.loads(pickle.dumps(grid))
    assert again == grid
    with pytest.raises(AttributeError):
        grid.cell_size = 100.0


def test_longitudes_are_taken_on_the_circle_only_around_the_antimeridian():
    from trajmoe.spatial import continuous_longitudes, robust_centre, wrap_longitude

    new_york = np.array([-74.01, -73.95, -73.99])
    assert continuous_longitudes(new_york) is new_york            # every other city: untouched, bit for bit
    london = np.array([-0.1, 0.05, 0.1, 179.0])                   # a stray point far east: no unwrapping
    assert continuous_longitudes(london) is london
    fiji = np.array([179.98, 179.99, -179.99, -179.98])
    np.testing.assert_allclose(continuous_longitudes(fiji), [179.98, 179.99, 180.01, 180.02])
    lat, lon = robust_centre(np.full(4, -16.8), fiji)
    assert lat == -16.8 and abs(abs(lon) - 180.0) < 1e-9           # not 0.0005, in the Atlantic
    assert wrap_longitude(180.02) == pytest.approx(-179.98) and wrap_longitude(-73.9) == -73.9
