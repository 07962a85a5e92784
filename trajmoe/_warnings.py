"""Where the library's warnings point: at the user's line, not into trajmoe's files."""

import sys

__all__ = ["caller_stacklevel"]


def caller_stacklevel():
    """Stack level, for :func:`warnings.warn` called by the caller of this function, of the first
    frame outside trajmoe (and contextlib).

    Returns
    -------
    int
        At least 1.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("trajmoe", "contextlib"):
        frame, level = frame.f_back, level + 1
    return level
