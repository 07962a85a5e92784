"""Where the data sets live: ``data_home`` resolution and friendly missing-file errors."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

ENV_VAR = "TRAJMOE_DATA"
#: The data home when neither ``data_home`` nor :data:`ENV_VAR` names one.
DEFAULT_DATA_HOME = "~/trajmoe_data"


def get_data_home(data_home=None) -> Path:
    """Folder holding the data sets read by the ``load_*`` functions.

    Parameters
    ----------
    data_home : str or path-like, default None
        The folder. When None, the environment variable ``TRAJMOE_DATA`` is used, else
        ``~/trajmoe_data``. ``~`` is expanded. The folder is only read, never created or
        written to.

    Returns
    -------
    path : pathlib.Path
        The absolute folder path (it may not exist; the loaders say so when a file is missing).

    Raises
    ------
    TypeError
        If ``data_home`` is neither None, a str nor a path-like object.

    References
    ----------
    Modelled on :func:`sklearn.datasets.get_data_home` (which, unlike this one, creates the
    folder).

    Examples
    --------
    >>> from trajmoe.datasets import get_data_home
    >>> get_data_home("/tmp/somewhere").as_posix()
    '/tmp/somewhere'
    """
    if data_home is None:
        data_home = os.environ.get(ENV_VAR) or DEFAULT_DATA_HOME
    if not isinstance(data_home, (str, os.PathLike)):
        raise TypeError(
            f"data_home must be a folder path (str or pathlib.Path), got "
            f"{type(data_home).__name__} {data_home!r}: pass e.g. data_home='/path/to/data', "
            f"or leave it None and set {ENV_VAR}"
        )
    return Path(data_home).expanduser().absolute()


def home_source(data_home=None) -> str:
    """Where the data home comes from, for messages: the argument, the environment variable
    or the default."""
    if data_home is not None:
        return "the data_home argument"
    if os.environ.get(ENV_VAR):
        return f"the environment variable {ENV_VAR}"
    return f"the default {DEFAULT_DATA_HOME} ({ENV_VAR} is not set)"


def data_file(relpath: str, data_home=None, what: str = "") -> Path:
    """Path of a data file under the data home, checked to exist.

    Parameters
    ----------
    relpath : str
        Path of the file relative to the data home, e.g. ``"foursquare_nyc/checkins.csv.gz"``.
    data_home : str or path-like, default None
        See :func:`get_data_home`.
    what : str, default ""
        What the file holds, for the message.

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        If the file is missing; the message says where the loader looked, why there, and how
        to fix it.
    NotADirectoryError
        If the data home is a file.
    """
    home = get_data_home(data_home)
    path = home / relpath
    if home.is_file():
        raise NotADirectoryError(
            f"the data home {home} (from {home_source(data_home)}) is a file, not a folder: point it at "
            f"the folder that holds {relpath.split('/')[0]}/.")
    if not path.is_file():
        raise FileNotFoundError(
            f"data file {relpath!r}{' (' + what + ')' if what else ''} not found: looked for "
            f"{path} (data home {home}, from {home_source(data_home)}). Put the file there, or point "
            f"{ENV_VAR} (or the data_home argument) at the folder that holds "
            f"{relpath.split('/')[0]}/."
        )
    return path


def read_csv(path, what="", **kwargs):
    """:func:`pandas.read_csv` of a data file, with a clear error when the file is damaged.

    Parameters
    ----------
    path : Path
        The file (from :func:`data_file`).
    what : str, default ""
        What the file holds, for the message.
    **kwargs
        Passed to :func:`pandas.read_csv`.

    Returns
    -------
    DataFrame

    Raises
    ------
    ValueError
        If the file cannot be read as the data set's table (a truncated download, a damaged
        archive, another file under the expected name): the message names the file, its size
        and what the reader said, and asks to download it again.
    """
    import gzip
    import zlib

    try:
        return pd.read_csv(path, **kwargs)
    except (ValueError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        size = Path(path).stat().st_size
        raise ValueError(
            f"data file {path}{' (' + what + ')' if what else ''}, {size:,} bytes, cannot be read as that data "
            f"set's table: it looks truncated or damaged, or is another file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Download it again (see the data README)."
        ) from exc
