"""Pipeline steps before the model: raw GPS fixes to stay points to the visit frame, and more.

:class:`StayPointDetector` (scikit-learn transformer, trackintel's stay point detection) turns
position fixes (``user_id``, ``tracked_at``, ``lat``, ``lon``) into the canonical visit frame of
:mod:`trajmoe.schema`, so ``make_pipeline(StayPointDetector(...), estimator)`` runs on raw GPS.
:func:`as_fixes` and :func:`staypoints_to_visits` are the small duck-typed adapters for frames
of trackintel, movingpandas and scikit-mobility (none of them is imported).
:class:`CityTimeZoneLocalizer` puts every visit's times into its city's local time, and
:class:`ShortUserFilter` leaves users with few visits out of fitting (and says how many)::

    make_pipeline(CityTimeZoneLocalizer({"nyc": "America/New_York"}), ShortUserFilter(),
                  SpatialSemanticEncoder(), TrajMoERegressor())
"""

from ._adapters import as_fixes, is_staypoints, staypoints_to_visits
from ._filters import ShortUserFilter
from ._staypoints import StayPointDetector
from ._timezones import CityTimeZoneLocalizer

__all__ = ["CityTimeZoneLocalizer", "ShortUserFilter", "StayPointDetector", "as_fixes", "is_staypoints",
           "staypoints_to_visits"]
