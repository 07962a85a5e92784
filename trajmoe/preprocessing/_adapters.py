"""Small duck-typed adapters: frames of trackintel, movingpandas and scikit-mobility.

None of those libraries is imported: the adapters look at attributes and column names only,
so they keep working across versions and cost nothing when the library is absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..exceptions import SchemaError
from ..schema import CITY, DEFAULT_CITY, FINISHED_AT, LAT, LON, STARTED_AT, USER

#: Column names of a position-fix frame.
TRACKED_AT = "tracked_at"
FIX_COLUMNS = (USER, TRACKED_AT, LAT, LON)

# scikit-mobility TrajDataFrame column names -> ours
_SKMOB = {"uid": USER, "datetime": TRACKED_AT, "lat": LAT, "lng": LON}


def _geometry_lat_lon(frame) -> tuple[np.ndarray, np.ndarray] | None:
    """lat/lon (WGS84 degrees) of a GeoDataFrame-like frame of points, or None.

    Projected frames are converted with their own ``to_crs`` (EPSG:4326).
    """
    geom = getattr(frame, "geometry", None)
    if geom is None or not hasattr(geom, "x") or not hasattr(geom, "y"):
        return None
    crs = getattr(frame, "crs", None)
    if crs is not None and not getattr(crs, "is_geographic", True) and hasattr(frame, "to_crs"):
        geom = frame.to_crs(4326).geometry
    return np.asarray(geom.y, dtype="float64"), np.asarray(geom.x, dtype="float64")


def _plain(frame) -> pd.DataFrame:
    """A plain DataFrame of ``frame`` with ``lat``/``lon`` taken from its point geometry
    when it has one and no lat/lon columns (the geometry column itself is left out)."""
    coords = None if (LAT in frame.columns and LON in frame.columns) else _geometry_lat_lon(frame)
    geo_col = getattr(getattr(frame, "geometry", None), "name", None)
    out = pd.DataFrame(frame).drop(columns=[geo_col] if geo_col in frame.columns else [])
    if coords is not None:
        out[LAT], out[LON] = coords
    return out


def is_staypoints(X) -> bool:
    """Whether ``X`` already holds stay points (trackintel ``Staypoints``-like frame).

    Parameters
    ----------
    X : object
        Anything.

    Returns
    -------
    answer : bool
        True for a DataFrame with ``user_id``, ``started_at`` and ``finished_at`` and no
        ``tracked_at`` column (a trackintel staypoints GeoDataFrame, or a visit frame with
        end times).
    """
    cols = getattr(X, "columns", ())
    return (isinstance(X, pd.DataFrame) and USER in cols and STARTED_AT in cols
            and FINISHED_AT in cols and TRACKED_AT not in cols)


def as_fixes(X) -> pd.DataFrame:
    """Position fixes of any of the supported containers as one plain DataFrame.

    Parameters
    ----------
    X : DataFrame, GeoDataFrame, movingpandas Trajectory or TrajectoryCollection, or \
scikit-mobility TrajDataFrame
        - a DataFrame with ``user_id``, ``tracked_at``, ``lat``, ``lon`` (WGS84 degrees);
        - a GeoDataFrame of points (e.g. trackintel ``Positionfixes``) with ``user_id`` and
          ``tracked_at``: lat/lon come from the geometry (a projected CRS is converted);
        - a movingpandas ``TrajectoryCollection`` (has ``trajectories``) or ``Trajectory``
          (has ``df`` and ``obj_id``/``id``): the time index becomes ``tracked_at``, the
          object id (else the trajectory id) ``user_id``, the trajectory id ``trajectory_id``;
        - a scikit-mobility ``TrajDataFrame`` (columns ``uid``, ``datetime``, ``lat``,
          ``lng``).

    Returns
    -------
    fixes : DataFrame of shape (n_fixes, n_columns)
        A new frame with ``user_id``, ``tracked_at``, ``lat``, ``lon`` and the other columns
        of the input (without the geometry). ``X`` is never modified.

    Raises
    ------
    SchemaError
        If ``X`` is none of these, or a required column is missing; the message says which
        and how to fix.

    References
    ----------
    Martin et al., "Trackintel: An open-source Python library for human mobility analysis",
    CEUS 101, 2023 (positionfixes); Graser, "MovingPandas: Efficient Structures for Movement
    Data in Python", GI_Forum 7(1), 2019; Pappalardo et al., "scikit-mobility: A Python
    Library for the Analysis, Generation, and Risk Assessment of Mobility Data", Journal of
    Statistical Software 103(4), 2022.

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe.preprocessing import as_fixes
    >>> tdf = pd.DataFrame({"uid": [1], "datetime": [pd.Timestamp("2024-01-01 08:00")],
    ...                     "lat": [60.17], "lng": [24.94]})
    >>> list(as_fixes(tdf).columns)
    ['user_id', 'tracked_at', 'lat', 'lon']
    """
    trajectories = getattr(X, "trajectories", None)
    if trajectories is None and hasattr(X, "df") and hasattr(X, "obj_id"):
        trajectories = [X]  # a single movingpandas Trajectory
    if trajectories is not None:
        frames = []
        for traj in trajectories:
            owner = getattr(traj, "obj_id", None)
            f = _plain(traj.df)
            f.insert(0, TRACKED_AT, traj.df.index.to_numpy())
            f.insert(0, USER, owner if owner is not None else getattr(traj, "id", None))
            f["trajectory_id"] = getattr(traj, "id", None)
            frames.append(f.reset_index(drop=True))
        if not frames:
            raise SchemaError("the trajectory collection holds no trajectory: pass at least one")
        X = pd.concat(frames, ignore_index=True)
    elif not isinstance(X, pd.DataFrame):
        raise SchemaError(
            f"position fixes must be a DataFrame with columns {list(FIX_COLUMNS)} (or a "
            f"GeoDataFrame of points, a movingpandas TrajectoryCollection, a scikit-mobility "
            f"TrajDataFrame), got {type(X).__name__}"
        )
    elif "uid" in X.columns and "lng" in X.columns and USER not in X.columns:
        X = X.rename(columns=_SKMOB)
    if not X.columns.is_unique:
        dup = sorted({str(c) for c in X.columns[X.columns.duplicated()]})
        raise SchemaError(f"position fixes have duplicated column names {dup}: rename or drop them")
    out = _plain(X)
    missing = [c for c in FIX_COLUMNS if c not in out.columns]
    if missing:
        raise SchemaError(
            f"position fixes lack the columns {missing}: give one row per GPS fix with "
            f"{list(FIX_COLUMNS)} (tracked_at: datetime64, lat/lon: WGS84 degrees), e.g. "
            f"X.rename(columns={{'time': 'tracked_at'}}); columns present: "
            f"{[str(c) for c in out.columns]}"
        )
    return out


def staypoints_to_visits(staypoints, city=None) -> pd.DataFrame:
    """The canonical visit frame of stay points (e.g. trackintel ``Staypoints``).

    Parameters
    ----------
    staypoints : DataFrame or GeoDataFrame of shape (n_staypoints, n_columns)
        One row per stay point with ``user_id``, ``started_at``, ``finished_at`` and either
        ``lat``/``lon`` columns (WGS84 degrees) or a point geometry (a projected CRS is
        converted). Other columns are kept. Never modified.
    city : str, default None
        City of every visit; None keeps a ``city`` column when there is one, else the
        default city (``"city"``).

    Returns
    -------
    visits : DataFrame of shape (n_staypoints, n_columns)
        ``user_id``, ``started_at``, ``finished_at``, ``lat``, ``lon``, ``city`` first, then
        the other columns; the index is a RangeIndex.

    Raises
    ------
    SchemaError
        If a required column or the geometry is missing.
    ValueError
        If ``city`` is given and the ``city`` column names several cities.

    References
    ----------
    Martin et al., "Trackintel: An open-source Python library for human mobility analysis",
    CEUS 101, 2023 (the staypoints model).
    """
    if not is_staypoints(staypoints):
        raise SchemaError(
            f"stay points need the columns {[USER, STARTED_AT, FINISHED_AT]} (and no "
            f"{TRACKED_AT!r}, which marks position fixes); got "
            f"{[str(c) for c in getattr(staypoints, 'columns', [])]}"
        )
    out = _plain(staypoints)
    if out.index.name is not None and out.index.name not in out.columns:
        out = out.reset_index()  # e.g. trackintel's stay point ids (index "id")
    if LAT not in out.columns or LON not in out.columns:
        raise SchemaError(
            "stay points need 'lat'/'lon' columns (WGS84 degrees) or a point geometry: "
            "pass a GeoDataFrame of points or add the two columns"
        )
    if city is not None:
        named = pd.unique(out[CITY].dropna()) if CITY in out.columns else []
        if len(named) > 1:
            raise ValueError(
                f"city={city!r} puts every stay point in one city, but the {CITY!r} column names {len(named)} "
                f"cities ({sorted(map(str, named))[:5]}): they would be merged. Leave city=None to keep the column.")
        out[CITY] = city
    elif CITY not in out.columns:
        out[CITY] = DEFAULT_CITY
    first = [USER, STARTED_AT, FINISHED_AT, LAT, LON, CITY]
    return out[first + [c for c in out.columns if c not in first]].reset_index(drop=True)
