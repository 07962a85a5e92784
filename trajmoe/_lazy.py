"""Lazy re-exports for package ``__init__`` modules (PEP 562): a public name's module is imported
on first access, so that ``import trajmoe`` (and the command line) starts without torch, pandas or
scikit-learn."""

import importlib

__all__ = ["attach"]


def attach(package, names, submodules=()):
    """Module-level ``__getattr__``, ``__dir__`` and ``__all__`` of a package with lazy names.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : dict of str -> str
        Public name -> module (relative to the package, e.g. ``"._counting"``) that defines it.
    submodules : iterable of str, default ()
        Public submodules reachable as attributes of the package (imported on first access).

    Returns
    -------
    __getattr__ : callable
        Imports the module of a name on first access and caches the value in the package.
    __dir__ : callable
        The package's attributes and its lazy public names.
    __all__ : list of str
        The lazy names, sorted (submodules are attributes, not part of ``__all__``).
    """
    submodules = tuple(submodules)

    def __getattr__(name):
        package_globals = vars(importlib.import_module(package))
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
        elif name in submodules:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        package_globals[name] = value
        return value

    def __dir__():
        return sorted({*vars(importlib.import_module(package)), *names, *submodules})

    return __getattr__, __dir__, sorted(names)
