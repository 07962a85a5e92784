"""Saving and loading a fitted neural estimator (TrajMoE, LSTM, Transformer) without pickle.

Pickle and joblib round-trip a model exactly, but loading a pickle runs code from the file.
:func:`save_model` writes a folder that holds only data: ``config.json`` (parameters, cities,
their grids with their robust centres, and the counts of rows their fitting left out),
``tables.npz`` (each city's cells, location features and visited venues) and
``weights.pt`` (the network's ``state_dict``, read back with ``torch.load(weights_only=True)``),
``optimizer.pt`` (the optimizer's state, read back the same way, so that ``partial_fit`` goes on as
it would have on the saved model) and ``history.json`` (the training history; skorch's
``save_params(f_optimizer=..., f_history=...)``), so a model from an untrusted source can be loaded
safely with :func:`load_model`.

A model trained on a GPU loads on a machine without one (onto the CPU, with a warning); a folder
written by another version of trajmoe loads with a :class:`trajmoe.exceptions.ModelVersionWarning`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted

from ._json import json_data
from ._version import __version__
from .encoder import CityTable, SpatialSemanticEncoder
from .estimators import LSTMRegressor, TrajMoERegressor, TransformerRegressor
from .estimators._neural import NET_PREFIXES, check_device
from .exceptions import ModelVersionWarning
from .spatial import CityGrid
from .taxonomy import TAXONOMY

__all__ = ["save_model", "load_model"]

_ARRAYS = ("cells", "poi_counts", "visit_counts", "coord_mean", "coord_std")
#: The files of a saved folder (replaced together once the new ones are written).
MODEL_FILES = ("config.json", "tables.npz", "weights.pt", "optimizer.pt", "history.json")
#: Estimator classes a saved folder may name (never imported by name from the file).
_CLASSES = {cls.__name__: cls for cls in (TrajMoERegressor, LSTMRegressor, TransformerRegressor)}


def save_model(model, path):
    """Write a fitted neural estimator to a folder of data files.

    Parameters
    ----------
    model : TrajMoERegressor, LSTMRegressor or TransformerRegressor
        A fitted model.
    path : str or Path
        Folder to write (created if needed; its files are overwritten).

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the model is not fitted.
    TypeError
        If ``model`` is not one of those classes.
    ValueError
        If ``set_params`` changed, since ``fit``, a parameter that ``fit`` fixes (the network's
        architecture, the encoder, the device, the loss, the optimizer): the folder would not
        load, or would fine-tune another network than the one fitted. Nothing is written.
    NotADirectoryError
        If ``path`` is a file.

    Warns
    -----
    UserWarning
        For parameters that are not data (``callbacks``, a RandomState ``random_state``, routed
        objects): they are not saved, and the loaded model has their defaults.

    Notes
    -----
    The training history (``history.json``; ``history_`` of the loaded model), the optimizer's
    state (AdamW's moments), the learning rate ``fit`` ran with and the (hashed) users the model
    was fitted on are saved, so that the loaded model fine-tunes as the saved one would
    (``partial_fit`` on a new city gives the same weights) and warns when it is scored on its own
    training users, as are the visited-venue lists of the encoder (a venue id that is not a
    number is kept as text; integers of an object column are kept as integers), from which ``partial_fit`` on a known check-in city adds new
    venues to its POI counts.
    """
    if type(model).__name__ not in _CLASSES or not isinstance(model, _CLASSES[type(model).__name__]):
        raise TypeError(f"save_model saves one of {sorted(_CLASSES)}, got {type(model).__name__}.")
    check_is_fitted(model, "net_")
    own = set(model._get_param_names())
    unknown = sorted(name for name in model.get_params(deep=False)
                     if name not in own and not name.startswith(NET_PREFIXES))
    # the folder holds the estimator's parameters: they must be the ones the weights were fitted
    # with (names that are no parameter are not saved: warned below)
    model._check_architecture("save_model writes the fitted network with the estimator's parameters, and its",
                              ignore=unknown)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"save_model writes a folder of files, and {path} is a file: give a folder path "
                                 f"(e.g. {path.with_suffix('')}_model/).")
    encoder = model.encoder_
    params, dropped, tuples = {}, [], []
    for name, value in model.get_params(deep=False).items():
        if name == "encoder" or name in unknown:
            continue
        if isinstance(value, tuple):      # JSON has lists only: named so that load gives tuples back
            tuples.append(name)
        try:
            value = json_data(value)
            json.dumps(value)
        except (TypeError, ValueError):
            dropped.append(name)
            continue
        params[name] = value
    if dropped:
        warnings.warn(f"save_model: parameters {dropped} are objects, not data; they are not saved, and the "
                      "loaded model has their defaults.", UserWarning, stacklevel=2)
    if unknown:
        warnings.warn(f"save_model: {unknown} {'is not a parameter' if len(unknown) == 1 else 'are not parameters'} "
                      f"of {type(model).__name__} (set_params took {'it' if len(unknown) == 1 else 'them'} with a "
                      "warning, and fit would refuse them): not saved.", UserWarning, stacklevel=2)
    config = {
        "trajmoe_version": __version__,
        "class": type(model).__name__,
        "estimator": params,
        "unsaved": dropped,
        "tuples": tuples,
        "encoder": json_data(encoder.get_params(deep=False)),
        "n_features_in": encoder.n_features_in_,
        "final_lr": getattr(model, "final_lr_", None),
        "fit_lr": getattr(model, "_fit_lr", None),
        "time_zones": getattr(model, "time_zones_", None),
        "time_forms": getattr(model, "time_forms_", None),
        "own_encoder": model.encoder is not None,
        "taxonomy": list(TAXONOMY),
        "cities": [_city_config(city, encoder.cities_[city]) for city in model.cities_],
    }
    arrays = {f"{i}/{name}": getattr(encoder.cities_[city], name)
              for i, city in enumerate(model.cities_) for name in _ARRAYS}
    for i, city in enumerate(model.cities_):
        venues = encoder.cities_[city].venues
        for name in () if venues is None else venues.columns:
            arrays[f"{i}/venues/{name}"] = _venue_array(venues[name])
    arrays["fit_user_keys"] = getattr(model, "_fit_user_keys", np.zeros(0, np.uint64))
    # written beside the folder first: a failed save leaves an earlier model there as it was
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = Path(tempfile.mkdtemp(prefix=f".{path.name}-draft-", dir=path.parent))
    try:
        (draft / "config.json").write_text(json.dumps(config, indent=2))
        np.savez(draft / "tables.npz", **arrays)
        state = {k: v.detach().cpu() for k, v in model.net_.module_.state_dict().items()}
        torch.save(state, draft / "weights.pt")
        model.net_.save_params(f_optimizer=draft / "optimizer.pt", f_history=draft / "history.json")
        path.mkdir(exist_ok=True)
        for name in MODEL_FILES:
            (draft / name).replace(path / name)
    finally:
        shutil.rmtree(draft, ignore_errors=True)
    return path


def _venue_array(values):
    """A venue column of a city table as an array ``np.savez`` stores as data: numbers as
    numbers (also integers held in an object column), anything else as text."""
    kind = pd.api.types.infer_dtype(values, skipna=False)
    if values.dtype.kind in "biuf":
        return values.to_numpy()
    if kind == "integer":
        try:
            return values.to_numpy().astype(np.int64)
        except OverflowError:        # beyond int64: kept as text
            return values.to_numpy().astype(str)
    if kind in ("floating", "mixed-integer-float"):
        return values.to_numpy().astype(np.float64)
    return values.to_numpy().astype(str)


def load_model(path, device=None):
    """Read a model written by :func:`save_model`, without unpickling any object.

    Parameters
    ----------
    path : str or Path
        Folder written by :func:`save_model`.
    device : str, optional
        Where to put the network, which also becomes the model's ``device`` parameter.
        Default: the saved ``device`` parameter when torch has that device here, else the
        CPU (a model trained on a GPU loads on a machine without one; UserWarning).

    Returns
    -------
    TrajMoERegressor, LSTMRegressor or TransformerRegressor
        Fitted (the saved class); predicts exactly as the saved model.

    Raises
    ------
    FileNotFoundError
        If a file of the folder is missing.
    ValueError
        If the model was saved with another POI taxonomy, names an unknown class, or its
        parameters or weights do not match that class; if a file of the folder was changed
        (a missing key, a value of another type, an array of another shape, NaN weights, a
        truncated file: the message names the file); if ``device`` is not a device torch has
        here.

    Warns
    -----
    trajmoe.exceptions.ModelVersionWarning
        If the folder was written by another version of trajmoe.
    UserWarning
        If the saved device is not available here and the model is loaded onto the CPU.
    """
    path = Path(path)
    try:
        return _load(path, device)
    except _DAMAGE as exc:
        raise ValueError(f"{path} is not a folder written by save_model, or one of its files was changed "
                         f"({type(exc).__name__}: {exc}). Save the model again.") from exc
    except ValueError as exc:
        if str(path) in str(exc) or "config.json" in str(exc) or ".npz" in str(exc):
            raise                                  # a message of this module, which names the file
        # a value of a changed file that a constructor refused (a centre of text, a form of another type)
        raise ValueError(f"{path}: a file of the folder holds a value load_model cannot use ({exc}); it was "
                         "changed after save_model wrote it. Save the model again.") from exc


#: What a changed or truncated file of a folder raises deep inside json, numpy or torch (the
#: checks of :func:`_load` raise ValueError naming the file for what they recognise).
_DAMAGE = (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError, zipfile.BadZipFile, EOFError)


@contextlib.contextmanager
def _reading(file):
    """Turn what json, numpy, torch and pickle raise on a damaged ``file`` into a ValueError that
    names the file (without their hints to load it unsafely: trajmoe never unpickles objects)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile,
            OSError, RuntimeError, ValueError) as exc:
        if type(exc) is ValueError and not any(hint in str(exc) for hint in ("allow_pickle", "pickled")):
            raise                                   # the checks' own messages (they name the file)
        raise ValueError(f"{file} is damaged or was not written by save_model ({type(exc).__name__}): it does "
                         "not hold the data save_model writes (trajmoe reads data only, never pickled "
                         "objects). Save the model again.") from None


def _load(path, device):
    """:func:`load_model` of a folder (its errors as the file formats raise them)."""
    with _reading(path / "config.json"):
        config = json.loads((path / "config.json").read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{path}/config.json holds a {type(config).__name__}, not the object save_model writes.")
    if config["taxonomy"] != list(TAXONOMY):
        raise ValueError(f"{path} was saved with another POI taxonomy; it cannot be loaded by this version.")
    cls = _CLASSES.get(config.get("class", "TrajMoERegressor"))
    if cls is None:
        raise ValueError(f"{path} holds a {config['class']!r}; load_model reads {sorted(_CLASSES)}.")
    saved_version = config.get("trajmoe_version")
    if saved_version != __version__:
        warnings.warn(f"{path} was saved by trajmoe {saved_version} and is loaded by trajmoe {__version__}: it "
                      "usually works, but predictions may differ where the library changed. Save it again "
                      "with this version, or refit it.", ModelVersionWarning, stacklevel=2)
    # JSON has no tuples: a parameter saved as one (e.g. a routed optimizer__betas), or whose
    # default is one (finetune_frozen; folders of earlier versions), comes back as one
    tuples = {name for name, p in inspect.signature(cls.__init__).parameters.items() if isinstance(p.default, tuple)}
    tuples |= set(config.get("tuples", ()))
    params = {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in config["estimator"].items()}
    # parameters added after the model was saved; those save_model could not write take their defaults
    unsaved = set(config.get("unsaved", ()))
    params = {**{k: v for k, v in cls._LEGACY_DEFAULTS.items() if k not in unsaved}, **params}
    if device is not None:
        check_device(device)
        params["device"] = device
    else:
        try:
            check_device(params.get("device", "auto"))
        except ValueError:
            warnings.warn(f"{path} was saved with device={params.get('device')!r}, which torch does not have "
                          "here: loaded onto the CPU (device='cpu').", UserWarning, stacklevel=2)
            params["device"] = "cpu"
    # the encoder parameter as it was (folders of earlier versions: the encoder's parameters)
    own = SpatialSemanticEncoder(**config["encoder"]) if config.get("own_encoder", True) else None
    try:
        model = cls(encoder=own, **params)
        model._validate_params()                 # a value of another type or range
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}/config.json does not hold {cls.__name__} parameters: {exc}") from None
    encoder = SpatialSemanticEncoder(**config["encoder"])
    with _reading(path / "tables.npz"), np.load(path / "tables.npz", allow_pickle=False) as tables:
        encoder.cities_ = {city["name"]: _city_table(city, [tables[f"{i}/{name}"] for name in _ARRAYS],
                                                     _venues(city, tables, i))
                           for i, city in enumerate(config["cities"])}
        if "fit_user_keys" in tables:               # folders of earlier versions have none
            model._fit_user_keys = tables["fit_user_keys"]
    encoder.feature_names_out_ = np.array(
        [f"poi_{c}" for c in TAXONOMY] + ["x_z", "y_z", "popularity"], dtype=object)
    encoder.n_features_in_ = config["n_features_in"]
    model.encoder_ = encoder
    model.cities_ = [city["name"] for city in config["cities"]]
    if config.get("final_lr") is not None:
        model.final_lr_ = config["final_lr"]
    if config.get("fit_lr") is not None:
        model._fit_lr = config["fit_lr"]
    for name in ("time_zones", "time_forms"):       # folders of earlier versions have none
        if config.get(name) is not None:
            setattr(model, f"{name}_", dict(config[name]))
    model.net_ = model._new_net(None)
    model.net_.initialize()
    with _reading(path / "weights.pt"):
        state = torch.load(path / "weights.pt", map_location=model.net_.device, weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}/weights.pt is not a state_dict written by save_model: save the model again.")
    bad = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise ValueError(f"{path}/weights.pt holds NaN or infinite values in {bad[:5]}: a diverged or damaged "
                         "model; save it again from a fitted model.")
    if (path / "history.json").exists():        # folders of earlier versions have none
        with _reading(path / "history.json"):
            model.net_.load_params(f_history=path / "history.json")
    try:
        model.net_.module_.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}/weights.pt does not match the {cls.__name__} of config.json "
                         f"(was a file changed or swapped?): {str(exc).splitlines()[0]}") from None
    # the tables the network learned for each city are those of the loaded weights
    model._city_keys = {city: encoder.cities_[city].keys for city in model.cities_}
    if (path / "optimizer.pt").exists():       # folders of earlier versions have none
        model.net_.initialize_optimizer()        # over the parameters of the loaded cities too
        with _reading(path / "optimizer.pt"):
            try:
                model.net_.load_params(f_optimizer=path / "optimizer.pt")
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ValueError(f"{path}/optimizer.pt does not match the network of weights.pt "
                                 f"(was a file changed or swapped?): {str(exc).splitlines()[0]}") from None
    return model


def _city_config(name, table):
    """The config.json entry of a city: its grid (cell size, CRS, robust centre) and the rows
    its fitting left out (``excluded``), which ``partial_fit``'s outlier checks and
    ``n_excluded_`` go on from."""
    centre = table.grid.centre
    return {"name": name, "cell_size": table.grid.cell_size, "crs": table.grid.crs,
            "centre": None if centre is None else [float(v) for v in centre],
            "excluded": {str(k): int(v) for k, v in getattr(table, "excluded", {}).items()},
            "popularity_rank": getattr(table, "popularity_rank", "vocabulary"),
            "venues": None if table.venues is None else list(table.venues.columns)}


def _check_tables(city, arrays):
    """ValueError naming the array of ``tables.npz`` (and the city) whose shape or values are not
    those :func:`save_model` writes."""
    cells, poi_counts, visit_counts, coord_mean, coord_std = arrays
    n = len(cells)
    size = city["cell_size"]
    problems = [
        ("cell_size of config.json", isinstance(size, bool) or not isinstance(size, (int, float))
         or not np.isfinite(size) or size <= 0, f"{size!r}, not a number of metres > 0"),
        ("cells", cells.ndim != 2 or cells.shape[1:] != (2,) or cells.dtype.kind not in "iu",
         f"shape {cells.shape} {cells.dtype}, not (n, 2) integer"),
        ("poi_counts", poi_counts.shape != (n, len(TAXONOMY)) or not np.isfinite(poi_counts).all()
         or (poi_counts < 0).any(), f"shape {poi_counts.shape}, not ({n}, {len(TAXONOMY)}) finite counts >= 0"),
        ("visit_counts", visit_counts.shape != (n,) or visit_counts.dtype.kind not in "iu" or (visit_counts < 0).any(),
         f"shape {visit_counts.shape} {visit_counts.dtype}, not ({n},) integer counts >= 0"),
        ("coord_mean", coord_mean.shape != (2,) or not np.isfinite(coord_mean).all(), "not 2 finite numbers"),
        ("coord_std", coord_std.shape != (2,) or not np.isfinite(coord_std).all() or (coord_std <= 0).any(),
         "not 2 finite numbers > 0"),
    ]
    for name, bad, what in problems:
        if bad:
            raise ValueError(f"tables.npz: city {city['name']!r}: {name} is {what}: the folder was changed "
                             "after save_model wrote it; save the model again.")


def _venues(city, tables, i):
    """The visited-venue list of the ``i``-th city of config.json (None: its counts come from a POI
    frame; folders of earlier versions saved none)."""
    columns = city.get("venues")
    if columns is None:
        return None
    return pd.DataFrame({name: tables[f"{i}/venues/{name}"] for name in columns}, columns=columns)


def _city_table(city, arrays, venues=None):
    """The :class:`CityTable` of a config.json entry, its arrays and its venues (folders of
    earlier versions have no centre, so outliers are then only checked at null island, no
    counts of excluded rows and no venues, and rank popularity among the whole vocabulary)."""
    _check_tables(city, arrays)
    centre = city.get("centre")
    try:
        grid = CityGrid(city["cell_size"], city["crs"], None if centre is None else tuple(float(v) for v in centre))
    except RuntimeError as exc:                  # pyproj's CRSError
        raise ValueError(f"config.json: city {city['name']!r} has a CRS pyproj does not know: {exc}") from None
    return CityTable(grid, *arrays, venues=venues, excluded=dict(city.get("excluded") or {}),
                     popularity_rank=city.get("popularity_rank", "vocabulary"))
