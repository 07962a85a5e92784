"""The shared functional POI taxonomy and mapping tables of each category vocabulary.

Category names of every source (Foursquare, YJMob100K, Flickr tours, OpenStreetMap tags) map
onto ONE taxonomy, the paper's 34 OpenStreetMap-derived categories (:data:`TAXONOMY`), so that POI
semantics are comparable across cities. The tables are plain CSV files shipped with the package
(``trajmoe/taxonomy/data/<source>.csv``, columns ``source_name,category``) and were written by
hand.
"""

from ._mapping import (SOURCES, TAXONOMY, detect_source, map_categories, map_frame_categories,
                       mapping_table)

__all__ = ["TAXONOMY", "SOURCES", "map_categories", "mapping_table", "detect_source",
           "map_frame_categories"]
