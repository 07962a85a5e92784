"""Where the data sets live: ``data_home`` resolution and friendly missing-file errors."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TRAJMOE_DATA"


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
        data_home = os.environ.get(ENV_VAR) or "~/trajmoe_data"
    if not isinstance(data_home, (str, os.PathLike)):
        raise TypeError(
            f"data_home must be a folder path (str or pathlib.Path), got "
            f"{type(data_home).__name__} {data_home!r}: pass e.g. data_home='/path/to/data', "
            f"or leave it None and set {ENV_VAR}"
        )
    return Path(data_home).expanduser().absolute()


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
    """
    home = get_data_home(data_home)
    path = home / relpath
    if not path.is_file():
        if data_home is not None:
            source = "the data_home argument"
        elif os.environ.get(ENV_VAR):
            source = f"the environment variable {ENV_VAR}"
        else:
            source = f"the default (~/trajmoe_data; {ENV_VAR} is not set)"
        raise FileNotFoundError(
            f"data file {relpath!r}{' (' + what + ')' if what else ''} not found: looked for "
            f"{path} (data home {home}, from {source}). Put the file there, or point "
            f"{ENV_VAR} (or the data_home argument) at the folder that holds "
            f"{relpath.split('/')[0]}/."
        )
    return path
