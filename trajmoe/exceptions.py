"""The errors and warnings of trajmoe.

:class:`SchemaError` (a frame does not follow the data model), :class:`UnknownCityError` (a
city the fitted object has not seen), :class:`DataWarning` (rows or values dropped, filled
or left unmapped), :class:`ZeroShotWarning` (a city scored zero-shot), :class:`ShortWindowsWarning` (visits in no window long
enough to train on or score), :class:`SharedUsersWarning` (a model scored on users
it was fitted on), :class:`ModelVersionWarning` (a model saved by another trajmoe version) and
:class:`NonFiniteLossError` (training diverged). Each subclasses the built-in exception code catches already, so
``except ValueError`` keeps working.
"""

__all__ = ["SchemaError", "UnknownCityError", "DataWarning", "ZeroShotWarning", "ShortWindowsWarning",
           "SharedUsersWarning", "ModelVersionWarning", "NonFiniteLossError"]


class SchemaError(ValueError):
    """A visit or POI frame does not follow the trajmoe data model.

    The message names the column, up to five offending row labels with the total count, and
    how to fix the input.
    """


class UnknownCityError(KeyError, ValueError):
    """A city that the fitted encoder or estimator has not seen.

    Raised where a frame or a lookup names such a city; register the city with ``partial_fit``
    first. A :class:`KeyError` (a lookup by city name failed) and a :class:`ValueError` (the
    input holds an unsupported value), so code that catches either keeps working.
    """

    def __str__(self):
        # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class DataWarning(UserWarning):
    """Rows or values were dropped, filled or left unmapped; the message says how many."""


class ZeroShotWarning(DataWarning):
    """A city the fitted object has not seen is scored zero-shot, from a temporary grid and
    location table built from the frame (:meth:`trajmoe.SpatialSemanticEncoder.with_unseen_cities`);
    the message names the cities and how to learn them instead (``partial_fit``)."""


class ShortWindowsWarning(DataWarning):
    """Visits in no window of at least ``min_stays`` stays were left out: not scored (non-overlapping
    windows, as predictions and validation use them) or not trained on (training windows).

    Windows are ``window_days`` days of one user's stays (:func:`trajmoe.sequences.window_bounds`); a window
    with fewer than ``min_stays`` stays is not used. The message says how many visits and users
    that leaves out; the counts are also attributes, so that a caller can add them up (the
    ``trajmoe demo`` command prints one line for all its frames).

    Parameters
    ----------
    message : str
        The note, as printed.
    n_left_out, n_visits : int
        Visits left out, of the visits windowed.
    n_users_without, n_users : int
        Users with no window at all, of the users windowed.
    min_stays, window_days : int
        The estimator's parameters (stays; days).
    kind : str
        Which windows: ``"non-overlapping windows, as scored"`` or ``"training windows starting
        every k days"``.
    """

    def __init__(self, message, *, n_left_out, n_visits, n_users_without, n_users, min_stays, window_days, kind):
        super().__init__(message)
        self.n_left_out, self.n_visits = n_left_out, n_visits
        self.n_users_without, self.n_users = n_users_without, n_users
        self.min_stays, self.window_days, self.kind = min_stays, window_days, kind

    def __reduce__(self):
        # keyword-only counts: pickled (e.g. from a joblib worker) with them, not from args alone
        return _short_windows_warning, (self.args[0], vars(self))


def _short_windows_warning(message, counts):
    return ShortWindowsWarning(message, **counts)


class SharedUsersWarning(DataWarning):
    """A model is scored on users it was fitted on.

    Rows are visits: a cross-validation split by rows (scikit-learn's default ``cv``, a
    :class:`~sklearn.model_selection.KFold`) puts visits of one user in both the training and
    the test fold, so the model is scored on users it has seen. Split by users instead
    (:class:`trajmoe.model_selection.UserKFold`, or ``GroupKFold`` with ``groups=X["user_id"]``),
    or by city (:class:`trajmoe.model_selection.LeaveOneCityOut`). A split by time scores the
    same users on purpose: filter this warning then.
    """


class ModelVersionWarning(UserWarning):
    """A model saved (``save_model``, pickle) by another version of trajmoe is loaded.

    It usually works; predictions may differ where the library changed. Refit the model, or
    save it again with this version, to silence the warning.
    """


class NonFiniteLossError(FloatingPointError, ValueError):
    """Training stopped at a NaN or infinite loss (it diverged) instead of producing a NaN model.

    Raised by a neural estimator's ``fit`` or ``partial_fit``; the message names the epoch and
    the batch. The estimator is left as it was before the call (fits are atomic). Usually the
    learning rate is too high, or the input holds extreme values. A
    :class:`FloatingPointError` (numerical trouble) and a :class:`ValueError` (a value of the
    parameters or the data does not work), so code that catches either keeps working.
    """
