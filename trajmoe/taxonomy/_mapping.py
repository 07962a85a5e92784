"""Mapping tables from source category vocabularies onto the shared functional taxonomy."""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Mapping
from importlib import resources

import pandas as pd

from ..exceptions import DataWarning

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
    if isinstance(source, str) and source.lower() == "taxonomy":
        return {name: name for name in TAXONOMY}
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


def map_categories(names, source="auto") -> pd.Series:
    """Map raw POI category names onto the shared functional taxonomy.

    Parameters
    ----------
    names : array-like of str of shape (n,)
        Raw category names (e.g. Foursquare ``"Coffee Shop"``, OSM ``"amenity=cafe"``). Leading
        and trailing white space is ignored. A Series keeps its index.
    source : {"auto", "foursquare", "yjmob", "flickr", "osm", "gowalla", "taxonomy"} or dict, \
default "auto"
        Which shipped table to use, or a custom ``{raw name: taxonomy name}`` mapping.
        ``"auto"`` recognises the vocabulary with :func:`detect_source` and maps with its table;
        names that already are taxonomy names keep their name (so a frame that mixes both is
        fine). ``"taxonomy"``: the names must already be taxonomy names.

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
        (the ten most frequent) and the total (and, for ``source="auto"``, the recognised
        vocabulary, or that none was recognised).

    See Also
    --------
    detect_source : which vocabulary ``source="auto"`` picks.
    map_frame_categories : the same for a column of a visit or POI frame.

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
    s = names if isinstance(names, pd.Series) else pd.Series(list(names), dtype=object)
    if isinstance(source, str) and source.lower() == "auto":
        detected = detect_source(s)
        source = f"auto: {detected or 'no vocabulary recognised'}"
        lookup = _auto_lookup(detected)
    else:
        lookup = _lookup(source)
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



def _distinct_names(names) -> pd.Index:
    """Distinct non-missing names, white space stripped."""
    s = names if isinstance(names, pd.Series) else pd.Series(list(names), dtype=object)
    s = s[s.notna()].astype(str).str.strip()
    return pd.Index(s.unique())


def detect_source(names, min_share=0.5, return_shares=False):
    """Recognise the vocabulary of raw category names by their overlap with each table.

    Parameters
    ----------
    names : array-like of str of shape (n,)
        Category names of one vocabulary (missing values are ignored, white space is
        stripped), e.g. the ``poi_category`` column of Foursquare check-ins.
    min_share : float, default 0.5
        Smallest share (0..1) of the distinct names that the winning vocabulary must know;
        below it no vocabulary is recognised.
    return_shares : bool, default False
        Also return the share of the distinct names known to every vocabulary.

    Returns
    -------
    source : str or None
        ``"taxonomy"`` when the names already are taxonomy names, else the name of the shipped
        table (one of :data:`SOURCES`) that knows the largest share of the distinct names;
        ties go to ``"taxonomy"``, then to the order of :data:`SOURCES` (Foursquare and
        Gowalla share names such as ``"Bar"``; their tables agree on those). None when no
        vocabulary knows ``min_share`` of the names (or there are no names).
    shares : dict of str -> float
        Only when ``return_shares``: share (0..1) of the distinct names in ``"taxonomy"`` and
        in each table of :data:`SOURCES`.

    Raises
    ------
    ValueError
        If ``min_share`` is not a number in 0..1.

    See Also
    --------
    map_categories : maps with the recognised table (``source="auto"``).

    Examples
    --------
    >>> from trajmoe.taxonomy import detect_source
    >>> detect_source(["Bar", "Home (private)", "Subway", "Coffee Shop"])
    'foursquare'
    >>> detect_source(["amenity=cafe", "shop=bakery", "amenity=bench"])
    'osm'
    >>> detect_source(["cafe", "restaurant"])
    'taxonomy'
    >>> detect_source(["qwerty"]) is None
    True
    """
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 <= min_share <= 1:
        raise ValueError(f"min_share must be a number in 0..1 (a share of names), got {min_share!r}")
    distinct = _distinct_names(names)
    shares = {"taxonomy": float(distinct.isin(TAXONOMY).mean()) if len(distinct) else 0.0}
    for source in SOURCES:
        known = _load_table(source)["source_name"].str.strip()
        shares[source] = float(distinct.isin(known).mean()) if len(distinct) else 0.0
    best = max(shares, key=shares.get)  # first maximum: "taxonomy", then SOURCES order
    found = best if len(distinct) and shares[best] >= min_share and shares[best] > 0 else None
    return (found, shares) if return_shares else found


def _auto_lookup(source) -> dict[str, str]:
    """Taxonomy names to themselves, plus the table of ``source`` (if any)."""
    lookup = {name: name for name in TAXONOMY}
    if source not in (None, "taxonomy"):
        lookup.update(_lookup(source))
    return lookup


def map_frame_categories(frame, column="poi_category", source="auto", unmapped="nan"):
    """Put the raw category names of one column of a visit or POI frame onto the taxonomy.

    Parameters
    ----------
    frame : DataFrame of shape (n_rows, n_columns)
        A visit frame (names in ``poi_category``) or a POI frame (names in ``category``).
        Never modified.
    column : str, default "poi_category"
        The column holding the names. A frame without it is returned as it is.
    source : {"auto", "foursquare", "yjmob", "flickr", "osm", "gowalla", "taxonomy"} or dict, \
default "auto"
        As in :func:`map_categories`: ``"auto"`` recognises the vocabulary (per call, over
        the whole column) and keeps names that already are taxonomy names.
    unmapped : {"nan", "drop", "keep"}, default "nan"
        What becomes of names that are not mapped: ``"nan"`` sets them missing, ``"drop"``
        drops their rows, ``"keep"`` keeps the raw name (no warning: for a caller that
        reports them itself). Missing names stay missing.

    Returns
    -------
    frame : DataFrame of shape (n_rows or fewer, n_columns)
        A copy with ``column`` holding taxonomy names; the frame itself (not a copy) when
        every name already is a taxonomy name or the column is absent.

    Raises
    ------
    ValueError
        If ``source`` or ``unmapped`` is not one of the documented values, or a custom
        mapping targets a name outside :data:`TAXONOMY`.

    Warns
    -----
    DataWarning
        When names are not mapped (``unmapped`` "nan" or "drop"): how many rows, which names
        (the ten most frequent), the recognised vocabulary and what became of the rows.

    Examples
    --------
    >>> import pandas as pd
    >>> from trajmoe.taxonomy import map_frame_categories
    >>> X = pd.DataFrame({"user_id": [1, 1], "poi_category": ["Bar", "Subway"]})
    >>> map_frame_categories(X)["poi_category"].tolist()
    ['pub', 'public_transport']
    """
    if unmapped not in ("nan", "drop", "keep"):
        raise ValueError(f"unmapped must be 'nan', 'drop' or 'keep', got {unmapped!r}")
    if not isinstance(frame, pd.DataFrame) or column not in frame.columns:
        return frame
    raw = frame[column]
    present = raw.notna().to_numpy()
    if raw[present].astype(str).isin(TAXONOMY).all():
        return frame
    if isinstance(source, str) and source.lower() == "auto":
        detected = detect_source(raw)
        lookup, label = _auto_lookup(detected), f"auto: {detected or 'no vocabulary recognised'}"
    else:
        lookup = _lookup(source)
        label = source if isinstance(source, str) else "the given mapping"
    key = raw.astype(object).copy()
    key[present] = raw[present].astype(str).str.strip()
    mapped = key.map(lookup)
    missed = (mapped.isna().to_numpy() & present)
    out = frame.copy()
    if unmapped == "keep":
        out[column] = mapped.where(~missed, raw).astype(object)
        return out
    out[column] = mapped.astype(object)
    if missed.any():
        counts = key[missed].value_counts()
        shown = ", ".join(f"{k!r} ({v})" for k, v in counts.head(10).items())
        more = f" and {len(counts) - 10} more names" if len(counts) > 10 else ""
        fate = "their rows were dropped" if unmapped == "drop" else "they became NaN"
        warnings.warn(
            f"{int(missed.sum())} of {len(frame)} rows have a {column!r} name that {label!r} "
            f"does not map onto the taxonomy, so {fate}: {shown}{more}. Map them yourself "
            f"(trajmoe.taxonomy.map_categories(names, source=dict)) to keep their semantics.",
            DataWarning,
            stacklevel=2,
        )
        if unmapped == "drop":
            out = out.loc[~missed]
    return out
