"""Loaders of the real mobility and POI data sets used to develop and test trajmoe.

Every loader reads the files under the data home (:func:`get_data_home`: the ``data_home``
argument, else the environment variable ``TRAJMOE_DATA``, else ``~/trajmoe_data``), returns a
:class:`sklearn.utils.Bunch` with validated canonical frames (see :mod:`trajmoe.schema`) and
never writes or caches anything. A missing file raises :class:`FileNotFoundError` saying where
the loader looked and how to fix it.
"""

from ._flickr import load_flickr
from ._foursquare import load_foursquare_nyc, load_foursquare_singapore
from ._gowalla import load_gowalla_ca
from ._home import get_data_home
from ._movegpt import load_movegpt
from ._yjmob import load_yjmob100k

__all__ = [
    "get_data_home",
    "load_foursquare_nyc",
    "load_foursquare_singapore",
    "load_gowalla_ca",
    "load_yjmob100k",
    "load_flickr",
    "load_movegpt",
]
