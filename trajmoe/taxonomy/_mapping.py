"""Mapping tables from source category vocabularies onto the shared functional taxonomy."""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Mapping
from importlib import resources

import pandas as pd

from ..schema import DataWarning

#: The paper's 34 OpenStreetMap-derived functional POI categories, in the column order of the
#: reference feature files (MoveGPT ``vocab_<City>.npy``, columns 0..33 raw counts, 34..67
#: normalised). ``TAXONOMY.index(name)`` is the feature column of ``name``.
TAXONOMY: tuple[str, ...] = (
    "finance",
    "cafe",
    "dormitory",
    "transport",
    "ice_cream",
    "shop",
    "health",
    "restaurant",
    "travel_agency",
    "education",
    "boutique",
    "office",
    "religion",
    "retail",
    "public_transport",
    "food",
    "marketplace",
    "home_improvement",
    "fast_food",
    "residential",
    "entertainment",
    "shop_beauty",
    "recycling",
    "shop_transport",
    "commodity",
    "sport",
    "pub",
    "public",
    "livelihood",
    "service",
    "government",
    "accommodation",
    "tourism",
    "kindergarten",
)

#: Source vocabularies with a mapping table shipped in ``trajmoe/taxonomy/data/<source>.csv``.
SOURCES: tuple[str, ...] = ("foursquare", "yjmob", "flickr", "osm", "gowalla")



@functools.lru_cache(maxsize=None)
def _load_table(source: str) -> pd.DataFrame:
    text = resources.files(__package__).joinpath("data", f"{source}.csv").read_text("utf-8")
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return table


def _check_source(source: str) -> str:
    if not isinstance(source, str) or source.lower() not in SOURCES:
        raise ValueError(
            f"unknown category source {source!r}: use one of {list(SOURCES)} or pass a dict "
            f"{{raw name: taxonomy name}}"
        )
    return source.lower()


def mapping_table(source: str) -> pd.DataFrame:
    """The shipped mapping of one source vocabulary onto :data:`TAXONOMY`.

    Parameters
    ----------
    source : {"foursquare", "yjmob", "flickr", "osm", "gowalla"}
        The vocabulary. OSM names are ``"key=value"`` tags (e.g. ``"amenity=cafe"``) of the keys
        amenity, shop, tourism, leisure, office, building, landuse, healthcare, historic,
        railway, public_transport, highway (bus stops), aeroway and military. Gowalla names are
        the spot category names of the SNAP Gowalla check-ins as parsed and trimmed by
        :func:`trajmoe.datasets.load_gowalla_ca` (287 rows: each of the 288 names of its 289
        categories, "Music" naming two, except ``"Farm"``, which has no single function and is
        left unmapped; ``"Subway"`` is the transit category, the sandwich chain is
        ``"Subway (sandwich chain)"``).

    Returns
    -------
    table : DataFrame of shape (n_names, 2)
        Columns ``source_name`` (str, the raw name) and ``category`` (str, a name of
        :data:`TAXONOMY`), one row per raw name, sorted by ``source_name``. A fresh copy: edit
        it freely and pass ``dict(zip(table.source_name, table.category))`` to
        :func:`map_categories`.

    Raises
    ------
    ValueError
        If ``source`` is not one of the shipped vocabularies.

    References
    ----------
    .. [1] Han, Yuan, Chen, Ding, Li, "TrajMoE: Spatially-Aware Mixture of Experts for Unified
       Human Mobility Modeling", arXiv 2505.18670, 2025 (the 34-category taxonomy).
    .. [2] Yang, Zhang, Zheng, Yu, "Modeling user activity preference by leveraging user spatial
       temporal characteristics in LBSNs", IEEE TSMC 45(1), 2015 (Foursquare categories).
    .. [3] Yabe et al., "YJMob100K: City-scale and longitudinal dataset of anonymized human
       mobility trajectories", Scientific Data 11, 2024 (85 YJMob categories).
    .. [4] Lim, Chen, Leckie, Karunasekera, "Personalized tour recommendation based on user
       interests and points of interest visit durations", IJCAI 2015 (Flickr categories).
    .. [5] OpenStreetMap wiki, "Map features" (amenity/shop/tourism/leisure/office tags).
    .. [6] Cho, Myers, Leskovec, "Friendship and mobility: user movement in location-based
       social networks", KDD 2011 (Gowalla check-ins; spot categories as in Yan et al.,
       "Spatio-temporal hypergraph learning for next POI recommendation", SIGIR 2023).
    """
    return _load_table(_check_source(source)).copy()



def _lookup(source) -> dict[str, str]:
    if isinstance(source, Mapping):
        lookup = {str(k).strip(): v for k, v in source.items()}
        bad = sorted({str(v) for v in lookup.values() if v not in TAXONOMY})
        if bad:
            raise ValueError(
                f"the mapping targets {bad} are not taxonomy names: use names of "
                f"trajmoe.taxonomy.TAXONOMY"
            )
        return lookup
    table = _load_table(_check_source(source))
    return dict(zip(table["source_name"].str.strip(), table["category"]))


def map_categories(names, source) -> pd.Series:
    """Map raw POI category names onto the shared functional taxonomy.

    Parameters
    ----------
    names : array-like of str of shape (n,)
        Raw category names (e.g. Foursquare ``"Coffee Shop"``, OSM ``"amenity=cafe"``). Leading
        and trailing white space is ignored. A Series keeps its index.
    source : {"foursquare", "yjmob", "flickr", "osm", "gowalla"} or dict
        Which shipped table to use, or a custom ``{raw name: taxonomy name}`` mapping.

    Returns
    -------
    categories : Series of shape (n,), dtype str
        The taxonomy name of each input (a name of :data:`TAXONOMY`), NaN where the name is
        missing or not in the table. Same index as ``names`` when it is a Series, else a
        RangeIndex. Nothing is dropped.

    Raises
    ------
    ValueError
        If ``source`` is unknown or a custom mapping targets a name outside :data:`TAXONOMY`.

    Warns
    -----
    DataWarning
        When some names are not mapped: the message lists the unmapped names with their counts
        (the ten most frequent) and the total.

    References
    ----------
    .. [1] Han, Yuan, Chen, Ding, Li, "TrajMoE: Spatially-Aware Mixture of Experts for Unified
       Human Mobility Modeling", arXiv 2505.18670, 2025 (the 34-category taxonomy).
    .. [2] Yang, Zhang, Zheng, Yu, "Modeling user activity preference by leveraging user spatial
       temporal characteristics in LBSNs", IEEE TSMC 45(1), 2015 (Foursquare categories).
    .. [3] Yabe et al., "YJMob100K: City-scale and longitudinal dataset of anonymized human
       mobility trajectories", Scientific Data 11, 2024 (85 YJMob categories).
    .. [4] Lim, Chen, Leckie, Karunasekera, "Personalized tour recommendation based on user
       interests and points of interest visit durations", IJCAI 2015 (Flickr categories).
    .. [5] OpenStreetMap wiki, "Map features" (amenity/shop/tourism/leisure/office tags).
    .. [6] Cho, Myers, Leskovec, "Friendship and mobility: user movement in location-based
       social networks", KDD 2011 (Gowalla check-ins; spot categories as in Yan et al.,
       "Spatio-temporal hypergraph learning for next POI recommendation", SIGIR 2023).

    Examples
    --------
    >>> from trajmoe.taxonomy import map_categories
    >>> map_categories(["Subway", "Bar", "Home (private)"], "foursquare").tolist()
    ['public_transport', 'pub', 'residential']
    >>> map_categories(["Corporate Office", "Starbucks", "Craftsman"], "gowalla").tolist()
    ['office', 'cafe', 'residential']
    """
    lookup = _lookup(source)
    s = names if isinstance(names, pd.Series) else pd.Series(list(names), dtype=object)
    raw = s.astype(object)
    present = raw.notna().to_numpy()
    key = raw.where(~present, raw.astype(str).str.strip())
    mapped = key.map(lookup).astype("str")
    unmapped = mapped.isna().to_numpy()
    if unmapped.any():
        counts = key[unmapped].fillna("<missing>").value_counts()
        shown = ", ".join(f"{k!r} ({v})" for k, v in counts.head(10).items())
        more = f" and {len(counts) - 10} more names" if len(counts) > 10 else ""
        src = source if isinstance(source, str) else "the given mapping"
        warnings.warn(
            f"{int(unmapped.sum())} of {len(s)} category names are not mapped by {src!r} and "
            f"became NaN: {shown}{more}. Extend the mapping "
            f"(map_categories(names, source=dict)) to keep their semantics.",
            DataWarning,
            stacklevel=2,
        )
    mapped.name = s.name
    return mapped

