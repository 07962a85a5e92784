"""Parameters as JSON data, for the files the library writes (saved models, window stores)."""

from __future__ import annotations

import os

import numpy as np


def json_data(value):
    """``value`` as JSON data: NumPy scalars as Python numbers (``np.float32(0.2)`` from a grid of
    ``np.linspace``, ``np.int64`` seeds), paths as strings, tuples as lists, within lists and
    dicts too; anything else as it is (``json.dumps`` then decides).

    Parameters
    ----------
    value : object

    Returns
    -------
    object
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):                # checkpoint_dir as a Path
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [json_data(v) for v in value]
    if isinstance(value, dict):
        return {k: json_data(v) for k, v in value.items()}
    return value
