"""The errors and warnings of trajmoe.

:class:`SchemaError` (a frame does not follow the data model), :class:`UnknownCityError` (a
city the fitted object has not seen), :class:`DataWarning` (rows or values dropped, filled
or left unmapped, a city scored zero-shot), :class:`SharedUsersWarning` (a model scored on users
it was fitted on), :class:`ModelVersionWarning` (a model saved by another trajmoe version) and
:class:`NonFiniteLossError` (training diverged). Each subclasses the built-in exception code catches already, so
``except ValueError`` keeps working.
"""

__all__ = ["SchemaError", "UnknownCityError", "DataWarning", "SharedUsersWarning", "ModelVersionWarning",
           "NonFiniteLossError"]


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
