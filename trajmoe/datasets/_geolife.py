"""GeoLife raw GPS loader: position fixes from .plt files, transport-mode labels."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from .._validation import check_time_zone
from ..exceptions import DataWarning
from ._home import data_file, get_data_home, read_csv

_GEOLIFE_REF = (
    "Zheng, Xie, Ma, \"GeoLife: A Collaborative Social Networking Service among User, "
    "location and trajectory\", IEEE Data Engineering Bulletin 33(2), 2010 (Microsoft Research "
    "GeoLife GPS Trajectories 1.3; samples as arranged by the trackintel project)."
)
#: Feet to metres (GeoLife altitudes are in feet; -777 means "no altitude").
_FEET = 0.3048
_NO_ALTITUDE = -777
#: Beijing, where (nearly) all GeoLife fixes lie.
GEOLIFE_TZ = "Asia/Shanghai"


def _read_plt(path) -> pd.DataFrame:
    """One .plt file: 6 header lines, then ``lat,lon,0,altitude_ft,days,date,time`` (GMT)."""
    raw = read_csv(
        path, "GeoLife trajectory",
        skiprows=6,
        header=None,
        names=["lat", "lon", "zero", "altitude_ft", "days", "date", "time"],
        dtype={"lat": "float64", "lon": "float64", "altitude_ft": "float64",
               "date": str, "time": str},
        usecols=["lat", "lon", "altitude_ft", "date", "time"],
    )
    tracked_at = pd.to_datetime(raw["date"] + " " + raw["time"], format="%Y-%m-%d %H:%M:%S",
                                utc=True, errors="coerce")
    altitude = raw["altitude_ft"].where(raw["altitude_ft"] != _NO_ALTITUDE) * _FEET
    return pd.DataFrame({"tracked_at": tracked_at, "lat": raw["lat"], "lon": raw["lon"],
                         "elevation": altitude})


def _read_labels(path) -> pd.DataFrame:
    """labels.txt: tab-separated ``Start Time``, ``End Time`` (GMT), ``Transportation Mode``."""
    raw = read_csv(path, "GeoLife labels", sep="\t", dtype=str)
    raw.columns = [c.strip() for c in raw.columns]
    fmt = "%Y/%m/%d %H:%M:%S"
    return pd.DataFrame({
        "started_at": pd.to_datetime(raw["Start Time"].str.strip(), format=fmt, utc=True),
        "finished_at": pd.to_datetime(raw["End Time"].str.strip(), format=fmt, utc=True),
        "mode": raw["Transportation Mode"].str.strip(),
    })


def _assign_modes(fixes: pd.DataFrame, labels: pd.DataFrame) -> pd.Series:
    """Transport mode of every fix whose time lies in one of its user's label intervals."""
    mode = pd.Series(np.nan, index=fixes.index, dtype=object)
    for user, lab in labels.groupby("user_id", sort=False):
        rows = fixes.index[fixes["user_id"] == user]
        if not len(rows):
            continue
        lab = lab.sort_values("started_at", kind="stable")
        starts = lab["started_at"].to_numpy()
        t = fixes.loc[rows, "tracked_at"].to_numpy()
        k = np.searchsorted(starts, t, side="right") - 1  # last interval starting at or before t
        ok = k >= 0
        inside = np.zeros(len(rows), dtype=bool)
        inside[ok] = t[ok] <= lab["finished_at"].to_numpy()[k[ok]]
        mode.loc[rows[inside]] = lab["mode"].to_numpy()[k[inside]]
    return mode


def load_geolife(data_home=None, *, users=None, tz=GEOLIFE_TZ) -> Bunch:
    """Load GeoLife raw GPS fixes (.plt files) with transport-mode labels where present.

    Reads every ``<user>/Trajectory/*.plt`` file under ``geolife/`` in the data home, at any
    depth (the local sample holds ``geolife/geolife``, ``geolife/geolife_long`` and
    ``geolife/geolife_modes``; the official download's ``Data/`` folder put under
    ``geolife/`` works too), and each user's ``labels.txt`` next to its ``Trajectory``
    folder. The user id is the GeoLife user folder name (``"000"``); a file found under the
    same user in two folders is read once. Nothing is written or cached.

    Parameters
    ----------
    data_home : str or path-like, default None
        Folder holding ``geolife/``; default ``$TRAJMOE_DATA``, else ``~/trajmoe_data`` (see
        :func:`get_data_home`).
    users : list of str, default None
        Only these GeoLife user ids (e.g. ``["000", "010"]``); None reads every user.
    tz : str or None, default "Asia/Shanghai"
        Time zone of ``tracked_at`` (GeoLife times are GMT; Beijing local time is UTC+8).
        None keeps UTC.

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``fixes`` : DataFrame of shape (n_fixes, 7), one row per GPS fix, sorted by user and
          time: ``user_id`` (str), ``tracked_at`` (datetime64, tz-aware), ``lat``, ``lon``
          (float64, WGS84 degrees), ``elevation`` (float64, metres; NaN where GeoLife gives
          -777), ``mode`` (str transport mode from ``labels.txt``, e.g. ``"walk"``, ``"bus"``;
          NaN outside every labelled interval or for users without labels),
          ``trajectory_id`` (str, ``"<user>/<file stem>"``). The input of
          :class:`trajmoe.preprocessing.StayPointDetector`.
        - ``labels`` : DataFrame of shape (n_intervals, 4): ``user_id``, ``started_at``,
          ``finished_at`` (tz as ``tracked_at``), ``mode``.
        - ``city`` : str, ``"beijing"``.
        - ``tz`` : str or None, the time zone of the times.
        - ``n_dropped`` : dict, ``{"duplicate_files": n, "invalid_fixes": n}`` (files found
          twice; fixes with an unparsable time or coordinates outside -90..90 / -180..180).
        - ``description`` : str.

    Raises
    ------
    FileNotFoundError
        If ``geolife/`` holds no .plt file; the message says where it looked and how to fix.
    ValueError
        If a user of ``users`` has no file there (the message lists the users there), or
        ``tz`` is no IANA time zone.
    TypeError
        If ``users`` is not a list of str (e.g. a single string, or int ids instead of
        ``"000"``).
    ValueError
        If ``users`` is an empty list.

    Warns
    -----
    DataWarning
        When invalid fixes are dropped (their count).

    References
    ----------
    .. [1] Zheng, Xie, Ma, "GeoLife: A Collaborative Social Networking Service among User,
       location and trajectory", IEEE Data Engineering Bulletin 33(2), 2010.
    .. [2] Zheng, Li, Chen, Xie, Ma, "Understanding Mobility Based on GPS Data", UbiComp 2008
       (the transport-mode labels).

    Examples
    --------
    >>> from trajmoe.datasets import load_geolife
    >>> data = load_geolife()  # doctest: +SKIP
    >>> data.fixes[["user_id", "tracked_at", "lat", "lon"]].head(1)  # doctest: +SKIP
    """
    if tz is not None:
        check_time_zone("tz", tz)
    if users is not None:
        if isinstance(users, (str, bytes)) or not all(isinstance(u, str) for u in users):
            raise TypeError(
                f"users must be a list of GeoLife user ids (folder names, str), e.g. ['000', "
                f"'010'], got {users!r}" + (f": use [{users!r}]" if isinstance(users, str) else
                                            ": zero-padded strings such as f'{u:03d}'"))
        users = list(users)
        if not users:
            raise ValueError("users is an empty list: name at least one GeoLife user (e.g. ['000']), or "
                             "pass users=None for all of them.")
    root = get_data_home(data_home) / "geolife"
    files: dict[tuple[str, str], object] = {}
    present: set[str] = set()
    n_dup = 0
    for path in sorted(root.glob("**/Trajectory/*.plt")):
        key = (path.parent.parent.name, path.stem)
        present.add(key[0])
        if users is not None and key[0] not in users:
            continue
        if key in files:
            n_dup += 1
            continue
        files[key] = path
    missing = [u for u in (users or []) if u not in present]
    if missing and present:
        raise ValueError(
            f"users {missing} have no GeoLife file under {root}: the users there are "
            f"{sorted(present)[:20]}{' ...' if len(present) > 20 else ''}; drop them from users")
    if not files:
        # the standard missing-file message: where it looked and how to fix
        data_file("geolife/<user>/Trajectory/<file>.plt", data_home,
                   "GeoLife GPS fixes" + (f" of users {list(users)}" if users is not None else ""))
    frames = []
    for (user, stem), path in files.items():
        f = _read_plt(path)
        f.insert(0, "user_id", user)
        f["trajectory_id"] = f"{user}/{stem}"
        frames.append(f)
    fixes = pd.concat(frames, ignore_index=True)
    bad = (fixes["tracked_at"].isna() | ~fixes["lat"].between(-90, 90)
           | ~fixes["lon"].between(-180, 180)).to_numpy()
    n_bad = int(bad.sum())
    if n_bad:
        warnings.warn(f"GeoLife: dropped {n_bad} of {len(fixes)} fixes with an unparsable time "
                      f"or coordinates outside -90..90 / -180..180 degrees", DataWarning,
                      stacklevel=2)
        fixes = fixes.loc[~bad]

    label_frames = []
    for user in sorted({u for u, _ in files}):
        for path in sorted(root.glob(f"**/{user}/labels.txt")):
            lab = _read_labels(path)
            lab.insert(0, "user_id", user)
            label_frames.append(lab)
    labels = (pd.concat(label_frames, ignore_index=True).drop_duplicates(ignore_index=True)
              if label_frames else
              pd.DataFrame({"user_id": pd.Series(dtype=object),
                            "started_at": pd.Series(dtype="datetime64[ns, UTC]"),
                            "finished_at": pd.Series(dtype="datetime64[ns, UTC]"),
                            "mode": pd.Series(dtype=object)}))
    fixes = fixes.sort_values(["user_id", "tracked_at"], kind="stable").reset_index(drop=True)
    fixes.insert(5, "mode", _assign_modes(fixes, labels))
    if tz is not None:
        fixes["tracked_at"] = fixes["tracked_at"].dt.tz_convert(tz)
        labels["started_at"] = labels["started_at"].dt.tz_convert(tz)
        labels["finished_at"] = labels["finished_at"].dt.tz_convert(tz)
    n_users = fixes["user_id"].nunique()
    return Bunch(
        fixes=fixes,
        labels=labels,
        city="beijing",
        tz=tz,
        n_dropped={"duplicate_files": n_dup, "invalid_fixes": n_bad},
        description=(
            f"GeoLife raw GPS fixes: {len(fixes):,} fixes of {n_users} users from "
            f"{len(files)} .plt files ({n_dup} files found twice were read once), "
            f"{len(labels)} transport-mode intervals ({int(fixes['mode'].notna().sum()):,} "
            f"fixes labelled). Times are {tz or 'UTC'}. Source: " + _GEOLIFE_REF
        ),
    )
