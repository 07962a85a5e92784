"""POIs from OpenStreetMap extracts (.osm.pbf) as the canonical POI frame (pyosmium)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataWarning
from ..schema import validate_pois
from ..taxonomy import mapping_table

#: Keys whose every tag marks a POI; tags of these keys that the taxonomy does not map are
#: reported as unmapped.
POI_KEYS = ("amenity", "shop", "tourism", "leisure", "office", "healthcare", "craft", "historic")
#: Keys whose tags count only where the taxonomy maps them (``railway=station`` is a POI,
#: ``railway=rail`` is not; ``building=dormitory`` is, ``building=yes`` is not).
MAPPED_ONLY_KEYS = ("public_transport", "railway", "highway", "aeroway", "military", "building",
                    "landuse")

_INSTALL_HINT = "install it with `pip install 'trajmoe[osm]'` (or `pip install osmium`)"


def _osmium():
    try:
        import osmium
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"read_osm_pois needs pyosmium: {_INSTALL_HINT}") from exc
    return osmium


def _tag_value(tags, key):
    """The value of ``key``; for a multi-valued tag (``"nightclub;restaurant"``) its first
    value is tried as well (returned second)."""
    value = tags.get(key)
    if value is None:
        return None, None
    first = value.split(";")[0].strip()
    return value, (first if first != value else None)


def _categorize(tags, keys, lookup):
    """(source tag, taxonomy category or None), or None when the element is no POI."""
    fallback = None
    for key in keys + tuple(k for k in MAPPED_ONLY_KEYS if k not in keys):
        value, first = _tag_value(tags, key)
        if value is None:
            continue
        for v in (value, first):
            if v is not None and f"{key}={v}" in lookup:
                return f"{key}={v}", lookup[f"{key}={v}"]
        if fallback is None and key in keys:
            fallback = f"{key}={value}"
    return (fallback, None) if fallback is not None else None


def _way_position(way):
    """Mean lat/lon of a way's nodes with a known location (closing node counted once)."""
    nodes = list(way.nodes)
    if len(nodes) > 1 and nodes[0].ref == nodes[-1].ref:
        nodes = nodes[:-1]
    pts = [(n.location.lat, n.location.lon) for n in nodes if n.location.valid()]
    if not pts:
        return None
    arr = np.asarray(pts, dtype="float64")
    return float(arr[:, 0].mean()), float(arr[:, 1].mean())


def _elements(osmium, path):
    """The elements of the extract; a file osmium cannot read raises a ValueError naming it."""
    try:
        yield from osmium.FileProcessor(str(path)).with_locations()
    except RuntimeError as exc:  # libosmium: empty, truncated or not an OSM file
        size = path.stat().st_size
        raise ValueError(
            f"{path} ({size:,} bytes) is not a readable OpenStreetMap extract ({exc}): it is empty, "
            f"truncated (an interrupted download?) or not in .osm.pbf / .osm format. Download it "
            f"again (fetch_osm_helsinki checks the SHA-256 of its file)") from exc


def read_osm_pois(path, *, city=None, keys=POI_KEYS, return_unmapped=False):
    """Read the POIs of an OpenStreetMap extract (.osm.pbf) as the canonical POI frame.

    Every node and way tagged with one of ``keys`` (amenity, shop, tourism, ...) is a POI; so
    is every element whose tag of :data:`MAPPED_ONLY_KEYS` (public_transport, railway,
    highway, aeroway, military, building, landuse) is in the taxonomy's OSM table
    (``building=dormitory``, ``railway=station``, ``highway=bus_stop``, ...). Its category is
    the taxonomy name of its first mapped tag, keys tried in the order of ``keys`` and then
    :data:`MAPPED_ONLY_KEYS`; of a multi-valued tag (``amenity=nightclub;restaurant``) the
    first value is tried too. A POI whose tags the OSM table does not map is reported (and
    left out). A way is placed at the mean of its nodes' positions. Relations (e.g.
    multipolygons) are counted in the report, not read: they have no position without
    assembling their members' geometry.

    Parameters
    ----------
    path : str or path-like
        An ``.osm.pbf`` (or ``.osm``, ``.osm.bz2``) file, e.g. the one of
        :func:`trajmoe.datasets.fetch_osm_helsinki`.
    city : str, default None
        The ``city`` of every POI; None takes the file name before its first dot, lower
        case (``"helsinki"`` for ``Helsinki.osm.pbf``).
    keys : sequence of str, default :data:`POI_KEYS`
        The OSM keys whose every tag marks a POI, in order of precedence.
    return_unmapped : bool, default False
        Also return the unmapped tags with their counts.

    Returns
    -------
    pois : DataFrame of shape (n_pois, 9)
        Validated by :func:`trajmoe.schema.validate_pois`, one row per OSM element:
        ``osm_type`` (``"node"`` or ``"way"``), ``osm_id`` (int64), ``name`` (str or NaN),
        ``lat``, ``lon`` (float64, WGS84 degrees), ``category`` (taxonomy name),
        ``source_category`` (the OSM tag that gave it, ``"key=value"``), ``count`` (1),
        ``city``.
    unmapped : Series of int
        Only when ``return_unmapped``: the number of POIs of each unmapped tag
        (``"key=value"``), most frequent first (empty when every POI was mapped).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist (IsADirectoryError, a subclass of OSError, if it is a
        folder).
    ValueError
        If the extract holds no POI with a mapped category, or osmium cannot read it (an
        empty, truncated or corrupted file; the message names it and its size).
    TypeError
        If ``path`` is not a str or path, or ``keys`` is a single string or holds non-str.
    ImportError
        If pyosmium is not installed (``pip install 'trajmoe[osm]'``).

    Warns
    -----
    DataWarning
        When POIs are left out: the unmapped tags (the ten most frequent) with the share of
        unmapped POIs overall and among the named amenity/shop POIs, the ways without a node
        position, and the relations not read; and when no element has one of ``keys``.

    References
    ----------
    .. [1] OpenStreetMap contributors, OpenStreetMap (ODbL), and the OpenStreetMap wiki,
       "Map features" (the tags).
    .. [2] pyosmium, Python bindings of libosmium (https://osmcode.org/pyosmium/).

    Examples
    --------
    >>> from trajmoe.datasets import fetch_osm_helsinki, read_osm_pois
    >>> pois = read_osm_pois(fetch_osm_helsinki())  # doctest: +SKIP
    >>> pois["category"].value_counts().head(3)  # doctest: +SKIP
    """
    osmium = _osmium()
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be the path of an OpenStreetMap extract (str or pathlib.Path), "
                        f"got {type(path).__name__} {path!r}, e.g. read_osm_pois(fetch_osm_helsinki())")
    path = Path(os.fspath(path))
    if path.is_dir():
        raise IsADirectoryError(f"OpenStreetMap extract {path} is a directory: pass the path of the "
                                f".osm.pbf file in it")
    if not path.is_file():
        raise FileNotFoundError(f"OpenStreetMap extract not found: {path}")
    if city is None:
        city = path.name.split(".")[0].lower() or "city"
    if isinstance(keys, (str, bytes)) or not all(isinstance(k, str) for k in keys):
        raise TypeError(f"keys must be a sequence of OSM keys (str), e.g. ('amenity', 'shop'), got "
                        f"{keys!r}" + (f": use ({keys!r},)" if isinstance(keys, str) else ""))
    keys = tuple(keys)
    table = mapping_table("osm")
    lookup = dict(zip(table["source_name"], table["category"]))

    rows, unmapped_rows = [], []
    n_relations = n_no_position = 0
    absent = set(keys)                              # keys no element of the extract has
    for obj in _elements(osmium, path):
        kind = obj.type_str()
        if kind not in ("n", "w", "r") or not len(obj.tags):
            continue
        if absent:
            absent -= {key for key in absent if key in obj.tags}
        found = _categorize(obj.tags, keys, lookup)
        if found is None:
            continue
        tag, category = found
        name = obj.tags.get("name")
        if category is None:
            unmapped_rows.append((tag, name is not None and tag.split("=")[0] in ("amenity", "shop")))
            continue
        if kind == "r":
            n_relations += 1
            continue
        if kind == "n":
            position = (obj.location.lat, obj.location.lon) if obj.location.valid() else None
        else:
            position = _way_position(obj)
        if position is None:
            n_no_position += 1
            continue
        rows.append(("node" if kind == "n" else "way", obj.id, name, *position, category, tag))

    pois = pd.DataFrame(rows, columns=["osm_type", "osm_id", "name", "lat", "lon", "category",
                                       "source_category"])
    unmapped = pd.Series([t for t, _ in unmapped_rows], dtype=object).value_counts()
    unmapped.name = "n_elements"
    unmapped.index.name = "tag"
    _report(path, pois, unmapped_rows, unmapped, n_relations, n_no_position, [k for k in keys if k in absent])
    if not len(pois):
        raise ValueError(
            f"no POI with a mapped category in {path}: is it an OpenStreetMap extract with "
            f"{list(keys)} tags? ({len(unmapped_rows)} POIs have unmapped tags)"
        )
    pois["osm_id"] = pois["osm_id"].astype("int64")
    pois["count"] = 1
    pois["city"] = city
    pois = validate_pois(pois)
    return (pois, unmapped) if return_unmapped else pois


def _report(path, pois, unmapped_rows, unmapped, n_relations, n_no_position, absent_keys=()):
    """One DataWarning with everything that was left out (and the ``keys`` no element has)."""
    parts = []
    if absent_keys:
        parts.append(f"no element has the keys {list(absent_keys)} (misspelt? OSM keys are lower case, "
                     "e.g. 'amenity')")
    if len(unmapped):
        n_un = len(unmapped_rows)
        named_un = sum(named for _, named in unmapped_rows)
        named_all = named_un + int(
            (pois["name"].notna() & pois["source_category"].str.match(r"(amenity|shop)=")).sum()
        )
        shown = ", ".join(f"{k!r} ({v})" for k, v in unmapped.head(10).items())
        more = f" and {len(unmapped) - 10} more tags" if len(unmapped) > 10 else ""
        share = f"{named_un / named_all:.1%}" if named_all else "n/a"
        total = n_un + len(pois) + n_relations + n_no_position
        parts.append(
            f"{n_un} of {total} POIs ({n_un / total:.1%}) have tags the taxonomy's OSM table "
            f"does not map and are left out ({named_un} of {named_all} named amenity/shop "
            f"POIs, {share}): {shown}{more}"
        )
    if n_no_position:
        parts.append(f"{n_no_position} ways have no node inside the extract and are left out")
    if n_relations:
        parts.append(f"{n_relations} relations (multipolygons, sites) with a mapped tag are not "
                     f"read (no position without their members' geometry)")
    if parts:
        warnings.warn(
            f"{path.name}: " + "; ".join(parts) + ". read_osm_pois(..., return_unmapped=True) "
            "returns the unmapped tags; map them with trajmoe.taxonomy.map_categories(names, "
            "source=dict).",
            DataWarning,
            stacklevel=3,
        )
