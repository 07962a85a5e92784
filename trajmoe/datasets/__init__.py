"""Loaders of the real mobility and POI data sets used to develop and test trajmoe.

Every loader reads the files under the data home (:func:`get_data_home`: the ``data_home``
argument, else the environment variable ``TRAJMOE_DATA``, else ``~/trajmoe_data``), returns a
:class:`sklearn.utils.Bunch` with validated canonical frames (see :mod:`trajmoe.schema`) and
never writes or caches anything. A missing file raises :class:`FileNotFoundError` saying where
the loader looked and how to fix it.

The ``fetch_*`` functions know every file's SHA-256 and public origin: they verify the local
copy, download a missing file into the data home where a public address is known, or say
where to put it. :func:`read_osm_pois` reads POIs from any OpenStreetMap extract (.osm.pbf).
"""

from ._fetchers import (fetch_flickr, fetch_foursquare_nyc, fetch_foursquare_singapore,
                        fetch_geolife, fetch_gowalla_ca, fetch_movegpt, fetch_osm_helsinki,
                        fetch_yjmob100k)
from ._flickr import load_flickr
from ._foursquare import load_foursquare_nyc, load_foursquare_singapore
from ._geolife import load_geolife
from ._gowalla import load_gowalla_ca
from ._home import get_data_home
from ._movegpt import load_movegpt
from ._osm import read_osm_pois
from ._yjmob import load_yjmob100k

__all__ = [
    "get_data_home",
    "load_foursquare_nyc",
    "load_foursquare_singapore",
    "load_gowalla_ca",
    "load_yjmob100k",
    "load_flickr",
    "load_movegpt",
    "load_geolife",
    "read_osm_pois",
    "fetch_foursquare_nyc",
    "fetch_foursquare_singapore",
    "fetch_gowalla_ca",
    "fetch_yjmob100k",
    "fetch_flickr",
    "fetch_movegpt",
    "fetch_geolife",
    "fetch_osm_helsinki",
]
