"""The package's layout: lazy public names, what each layer imports, no import cycle, one error
for an unknown city."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import trajmoe
import trajmoe.estimators
from trajmoe import SpatialSemanticEncoder, UnknownCityError

PACKAGE = Path(trajmoe.__file__).parent


def _loaded_after(code):
    """Heavy modules loaded by a fresh interpreter after running ``code``."""
    probe = f"import sys; {code}; print(sorted(m for m in ('torch', 'skorch', 'pandas', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    return out.stdout.strip()


def test_import_and_help_load_no_heavy_module():
    assert _loaded_after("import trajmoe") == "[]"
    assert _loaded_after("import trajmoe.cli") == "[]"


def test_counting_baselines_metrics_and_data_layer_do_not_import_torch():
    code = ("from trajmoe import PopularityBaseline, MarkovBaseline, HistoryFrequencyBaseline, GravityBaseline, "
            "HistoryGravityBaseline, SpatialSemanticEncoder, metrics, model_selection, schema, sequences, encoder")
    assert "torch" not in _loaded_after(code)


@pytest.mark.parametrize("module", [trajmoe, trajmoe.estimators])
def test_public_names_resolve_and_are_listed(module):
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        module.nothing  # noqa: B018


def _module_imports():
    """Module-level imports of every trajmoe module: {module: set of imported trajmoe modules}, and
    the private names imported from another module."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]  # of a module, or the package itself for an __init__
        modules[".".join(package if parts[-1] == "__init__" else parts)] = (path, package)
    graph, private = {}, []
    for name, (path, package) in modules.items():
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("trajmoe")):
                base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
                target = ".".join(filter(None, [base, node.module]))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in modules else target)
                    if alias.name.startswith("_") and not alias.name.startswith("__") and full not in modules:
                        private.append(f"{name}: {alias.name}")
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("trajmoe")}
        graph[name] = deps & set(modules) - {name}
    return graph, private


def test_no_import_cycle_and_no_private_name_imported_across_modules():
    graph, private = _module_imports()
    assert not private

    def in_cycle(module):
        seen, todo = set(), list(graph[module])
        while todo:
            current = todo.pop()
            if current == module:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return False

    assert [m for m in graph if in_cycle(m)] == []


def test_unknown_city_error_is_a_key_and_a_value_error():
    assert issubclass(UnknownCityError, KeyError) and issubclass(UnknownCityError, ValueError)
    visits = pd.DataFrame({"user_id": 1, "city": "A", "day": 0, "slot": np.arange(4), "x": 1, "y": np.arange(4)})
    encoder = SpatialSemanticEncoder().fit(visits)
    with pytest.raises(UnknownCityError, match=r"^Unknown city 'B'; known cities: \['A'\]\.$"):
        encoder.location_table("B")
    with pytest.raises(UnknownCityError, match="has not seen"):
        encoder.locate(visits.assign(city="B"))
