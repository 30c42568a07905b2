"""The import graph of the project's own packages: no cycles, and the promised layering.

The graph is read from the source with ``ast`` (nothing is imported): every ``import x`` and
``from x import y``, relative ones too, at any depth (inside functions as well), resolved to the project
module it loads. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg`` (a name its ``__init__`` defines); ``import pkg.sub`` is an edge to ``pkg.sub``, not to ``pkg``,
whose ``__init__`` Python has already started by then. Imports of anything else (the standard library,
torch, ray, ...) are no edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "perturb", "sweep")
# package -> the project packages it must not import (models < perturb < sweep)
FORBIDDEN = {"models": ("perturb", "sweep"), "perturb": ("sweep",)}


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Every module of the packages under root: dotted name -> source file (a package's is its __init__)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The project modules that module ``name`` (source ``path``) imports -> the line of its first import."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        # the longest prefix of target that is a project module (an attribute path names its module)
        parts = target.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        if parts:
            found.setdefault(".".join(parts), line)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                if node.level - 1 > len(package) - 1:
                    raise ImportError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                base = package[: len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else source, node.lineno)
    found.pop(name, None)  # `from . import name` inside a package's own __init__ names the package itself
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Module -> {imported project module: line}, over every module of the packages."""
    modules = project_modules(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str] | dict[str, int]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts (["a", "b", "a"]), or None when there is none.

    Depth-first search in sorted order, so the same graph gives the same cycle.
    """
    done: set[str] = set()
    stack: list[str] = []  # the path being explored
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_stack:
                return stack[stack.index(target) :] + [target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """'a -> b (a.py line 3) -> a (b.py line 7)': each step with the line that imports it."""
    steps = [cycle[0]]
    for source, target in zip(cycle, cycle[1:]):
        steps.append(f"{target} (line {graph[source][target]} of {source})")
    return " -> ".join(steps)


# --- the project -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph(PROJECT, PACKAGES)


def test_the_graph_covers_every_module_of_the_project_packages(graph):
    assert {"models", "models.pushpull", "perturb.noise", "sweep.run", "sweep.training"} <= set(graph)
    assert "models.pushpull" in graph["models.wrn"]  # (imports inside functions: see the fake packages below)


def test_the_project_packages_have_no_import_cycle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {describe(cycle, graph)}"


def layer_crossings(graph: dict[str, dict[str, int]], package: str) -> list[str]:
    """Each import from a module of ``package`` into a package it must not import (FORBIDDEN)."""
    return [
        f"{source} imports {target} (line {line})"
        for source, targets in sorted(graph.items())
        if source.split(".")[0] == package
        for target, line in sorted(targets.items())
        if target.split(".")[0] in FORBIDDEN[package]
    ]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_the_lower_layers_import_nothing_from_the_layers_above(graph, package):
    crossings = layer_crossings(graph, package)
    assert crossings == [], f"{package} must import nothing from {' or '.join(FORBIDDEN[package])}: " + "; ".join(
        crossings
    )


# --- the checks can fail ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        pytest.param({"a": {"b"}, "b": {"c"}, "c": set()}, None, id="chain"),
        pytest.param({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}, None, id="diamond"),
        pytest.param({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"], id="three-cycle"),
        pytest.param({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"], id="cycle-below-the-start"),
        pytest.param({"a": {"a"}}, ["a", "a"], id="self-import"),
        pytest.param({"x": {"a"}, "a": {"b"}, "b": set(), "c": {"d"}, "d": {"c"}}, ["c", "d", "c"], id="apart"),
    ],
)
def test_find_cycle_on_small_graphs(graph, cycle):
    assert find_cycle(graph) == cycle


def write_package(root: Path, files: dict[str, str]) -> None:
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_a_cycle_through_relative_and_function_level_imports_is_found_and_reported(tmp_path):
    write_package(
        tmp_path,
        {
            "low/__init__.py": "from low.core import thing\n",
            "low/core.py": "import os\n\nthing = 1\n\n\ndef helper():\n    from .sub import deep\n    return deep\n",
            "low/sub/__init__.py": "from . import deep\n",
            "low/sub/deep.py": "import math\nfrom ..core import thing\n",
            "high/__init__.py": "",
            "high/app.py": "from low import thing\nimport low.sub.deep\nfrom . import tools\n",
            "high/tools.py": "",
        },
    )
    graph = import_graph(tmp_path, ("low", "high"))
    assert graph == {
        "low": {"low.core": 1},
        "low.core": {"low.sub.deep": 7},  # `from .sub import deep` in a function; os is no edge
        "low.sub": {"low.sub.deep": 1},  # `from . import deep` in a package's __init__
        "low.sub.deep": {"low.core": 2},  # `from ..core import thing`
        "high": {},
        "high.app": {"low": 1, "low.sub.deep": 2, "high.tools": 3},  # `low`: thing is a name of its __init__
        "high.tools": {},
    }
    cycle = find_cycle(graph)
    assert cycle == ["low.core", "low.sub.deep", "low.core"]
    assert (
        describe(cycle, graph) == "low.core -> low.sub.deep (line 7 of low.core) -> low.core (line 2 of low.sub.deep)"
    )


def test_a_lower_layer_importing_a_higher_one_is_a_crossing(tmp_path):
    write_package(
        tmp_path,
        {
            "models/__init__.py": "",
            "models/net.py": "def build():\n    from sweep.run import main\n    return main\n",
            "perturb/__init__.py": "from models import net\n",
            "sweep/__init__.py": "",
            "sweep/run.py": "import models.net\nimport perturb\n",
        },
    )
    graph = import_graph(tmp_path, PACKAGES)
    assert graph["models.net"] == {"sweep.run": 2}
    assert graph["perturb"] == {"models.net": 1}  # `from models import net`: the submodule
    assert find_cycle(graph) == ["models.net", "sweep.run", "models.net"]
    assert layer_crossings(graph, "models") == ["models.net imports sweep.run (line 2)"]
    assert layer_crossings(graph, "perturb") == []  # perturb -> models is allowed


def test_the_catalog_suites_and_command_lines_import_without_torch():
    """A typo on a command line (an unknown sweep or suite, --seeds 0) is answered before torch loads: the
    modules that check them import no torch; the networks and noise ops load it when first asked for."""
    code = (
        "import sys\n"
        "import models, perturb, sweep.aggregate, sweep.catalog, sweep.evaluate, sweep.run\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "from models import LeNet5, PushPull2d, WideResNet, build_model, pull_kernel_size\n"
        "from perturb import change_contrast, gaussian_noise, poisson_noise, shot_noise, speckle_noise\n"
        "import models.builder, models.lenet, models.pushpull, models.wrn, perturb.noise\n"
        "assert (LeNet5, PushPull2d, WideResNet, build_model, pull_kernel_size) == (models.lenet.LeNet5,\n"
        "    models.pushpull.PushPull2d, models.wrn.WideResNet, models.builder.build_model,\n"
        "    models.pushpull.pull_kernel_size)\n"
        "assert gaussian_noise is perturb.noise.gaussian_noise and shot_noise is perturb.noise.shot_noise\n"
        "try:\n"
        "    models.ResNet\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "module 'models' has no attribute 'ResNet'\n"
