"""Checks of parameter values shared by several modules (one home each; no torch)."""

import re
import zoneinfo

from ._constants import PROTOCOLS

__all__ = ["check_choice", "check_protocol", "check_time_zone", "parse_metric_name"]

_METRIC_NAME = re.compile(r"^(acc|ndcg)@(\d+)$")


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, else raise.

    Parameters
    ----------
    name : str
        Name of the parameter, for the message.
    value : object
    choices : tuple

    Returns
    -------
    object
        ``value``.

    Raises
    ------
    ValueError
        Naming the parameter, the value and the allowed values.
    """
    # compared one choice at a time, so that an array value gets this message, not numpy's
    # "truth value of an array is ambiguous"
    if not any(isinstance(value, type(choice)) and value == choice for choice in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def check_time_zone(label, zone):
    """Return ``zone`` if it names an IANA time zone, else raise.

    Parameters
    ----------
    label : str
        What holds the zone, for the message (e.g. ``"city_tz['nyc']"``).
    zone : object

    Returns
    -------
    str
        ``zone``.

    Raises
    ------
    ValueError
        Naming ``label`` and the value, with an example of a zone name.
    """
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{label} = {zone!r} is not a known IANA time zone (e.g. 'America/New_York').") from None
    return zone


def check_protocol(protocol):
    """Return ``protocol`` if it is an evaluation protocol (``"all"`` or ``"last"``), else raise.

    Parameters
    ----------
    protocol : object

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``protocol`` is not one of :data:`trajmoe.metrics.PROTOCOLS`.
    """
    return check_choice("protocol", protocol, PROTOCOLS)


def parse_metric_name(name):
    """Metric and cut-off of a metric name such as ``"acc@5"``, ``"mrr"`` or ``"ndcg@10"``.

    Parameters
    ----------
    name : str
        Case-insensitive; surrounding spaces are ignored.

    Returns
    -------
    metric : {"acc", "mrr", "ndcg"}
    k : int or None
        The cut-off (None for ``"mrr"``).

    Raises
    ------
    ValueError
        If ``name`` is not a string or not a known metric name.

    Examples
    --------
    >>> parse_metric_name("Acc@5"), parse_metric_name("mrr")
    (('acc', 5), ('mrr', None))
    """
    if not isinstance(name, str):
        raise ValueError(f"metric name must be a string like 'acc@1', 'mrr' or 'ndcg@10', got {name!r}.")
    key = name.strip().lower()
    if key == "mrr":
        return "mrr", None
    m = _METRIC_NAME.match(key)
    if m is None or int(m.group(2)) < 1:
        raise ValueError(
            f"unknown metric {name!r}; valid names are 'acc@k' and 'ndcg@k' for an integer k >= 1 "
            "(e.g. 'acc@1', 'acc@3', 'acc@5', 'acc@10', 'ndcg@10') and 'mrr'."
        )
    return m.group(1), int(m.group(2))
