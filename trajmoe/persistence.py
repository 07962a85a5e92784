"""Saving and loading a fitted neural estimator (TrajMoE, LSTM, Transformer) without pickle.

Pickle and joblib round-trip a model exactly, but loading a pickle runs code from the file.
:func:`save_model` writes a folder that holds only data: ``config.json`` (parameters, cities
and their grids), ``tables.npz`` (each city's cells and location features) and
``weights.pt`` (the network's ``state_dict``, read back with ``torch.load(weights_only=True)``),
so a model from an untrusted source can be loaded safely with :func:`load_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from . import __version__
from .encoder import CityTable, SpatialSemanticEncoder
from .estimator import TrajMoERegressor
from .neural_baselines import LSTMRegressor, TransformerRegressor
from .spatial import CityGrid
from .taxonomy import TAXONOMY

__all__ = ["save_model", "load_model"]

_ARRAYS = ("cells", "poi_counts", "visit_counts", "coord_mean", "coord_std")
#: Estimator classes a saved folder may name (never imported by name from the file).
_CLASSES = {cls.__name__: cls for cls in (TrajMoERegressor, LSTMRegressor, TransformerRegressor)}


def save_model(model, path):
    """Write a fitted neural estimator to a folder of data files.

    Parameters
    ----------
    model : TrajMoERegressor, LSTMRegressor or TransformerRegressor
        A fitted model.
    path : str or Path
        Folder to write (created if needed; its three files are overwritten).

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

    Notes
    -----
    The training history and the visited-venue lists of the encoder are not saved: a
    loaded model predicts exactly as the saved one, and ``partial_fit`` on a known city
    then keeps that city's POI counts as they are.
    """
    if type(model).__name__ not in _CLASSES or not isinstance(model, _CLASSES[type(model).__name__]):
        raise TypeError(f"save_model saves one of {sorted(_CLASSES)}, got {type(model).__name__}.")
    check_is_fitted(model, "net_")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder_
    params = {k: v for k, v in model.get_params(deep=False).items() if k != "encoder"}
    config = {
        "trajmoe_version": __version__,
        "class": type(model).__name__,
        "estimator": params,
        "encoder": encoder.get_params(deep=False),
        "n_features_in": encoder.n_features_in_,
        "final_lr": getattr(model, "final_lr_", None),
        "taxonomy": list(TAXONOMY),
        "cities": [{"name": city, "cell_size": encoder.cities_[city].grid.cell_size,
                    "crs": encoder.cities_[city].grid.crs} for city in model.cities_],
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    arrays = {f"{i}/{name}": getattr(encoder.cities_[city], name)
              for i, city in enumerate(model.cities_) for name in _ARRAYS}
    np.savez(path / "tables.npz", **arrays)
    state = {k: v.detach().cpu() for k, v in model.net_.module_.state_dict().items()}
    torch.save(state, path / "weights.pt")
    return path


def load_model(path, device=None):
    """Read a model written by :func:`save_model`, without unpickling any object.

    Parameters
    ----------
    path : str or Path
        Folder written by :func:`save_model`.
    device : str, optional
        Where to put the network (default: the saved ``device`` parameter; "auto" uses
        CUDA when present, so a model trained on a GPU loads on a CPU).

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
        parameters or weights do not match that class.
    """
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    if config["taxonomy"] != list(TAXONOMY):
        raise ValueError(f"{path} was saved with another POI taxonomy; it cannot be loaded by this version.")
    cls = _CLASSES.get(config.get("class", "TrajMoERegressor"))
    if cls is None:
        raise ValueError(f"{path} holds a {config['class']!r}; load_model reads {sorted(_CLASSES)}.")
    params = dict(config["estimator"])
    if device is not None:
        params["device"] = device
    try:
        model = cls(encoder=SpatialSemanticEncoder(**config["encoder"]), **params)
    except TypeError as exc:
        raise ValueError(f"{path}/config.json does not hold {cls.__name__} parameters: {exc}") from None
    encoder = SpatialSemanticEncoder(**config["encoder"])
    with np.load(path / "tables.npz", allow_pickle=False) as tables:
        encoder.cities_ = {
            city["name"]: CityTable(CityGrid(city["cell_size"], city["crs"]),
                                    *(tables[f"{i}/{name}"] for name in _ARRAYS), None)
            for i, city in enumerate(config["cities"])}
    encoder.feature_names_out_ = np.array(
        [f"poi_{c}" for c in TAXONOMY] + ["x_z", "y_z", "popularity"], dtype=object)
    encoder.n_features_in_ = config["n_features_in"]
    model.encoder_ = encoder
    model.cities_ = [city["name"] for city in config["cities"]]
    if config.get("final_lr") is not None:
        model.final_lr_ = config["final_lr"]
    model.net_ = model._new_net(None)
    model.net_.initialize()
    state = torch.load(path / "weights.pt", map_location=model.net_.device, weights_only=True)
    try:
        model.net_.module_.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}/weights.pt does not match the {cls.__name__} of config.json "
                         f"(was a file changed or swapped?): {str(exc).splitlines()[0]}") from None
    return model
