"""The package's shape, read from the source (no jax, nothing imported): each folder of
flaxtrainer/ is a room on a floor, and a room imports only rooms on lower floors.

The import graph is built with ``ast`` from every ``import`` and ``from ... import`` in every
module, those inside functions and under ``if TYPE_CHECKING:`` included, at module granularity:
``from flaxtrainer.models import crf`` is an edge to flaxtrainer.models.crf,
``from flaxtrainer.models import BertConfig`` one to flaxtrainer.models (its ``__init__``).

The checkers take the package folder, so the last tests run them on small packages written
in a temporary folder, where each rule is broken on purpose.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flaxtrainer"

# The layer order, lowest first. A room may import rooms on lower floors; rooms on one floor may
# import each other but not in a loop.
FLOORS = {
    "errors": 0,
    "runtime": 0,
    "models": 1,
    "data": 1,
    "config": 1,
    "checkpointing": 1,
    "batching": 1,
    "tasks": 2,
    "outputs": 3,
    "callbacks": 4,
    "training": 5,
    "inference": 6,
    "cli": 7,
}
# flaxtrainer/__init__.py (the public names) and __main__.py (``python -m flaxtrainer``) sit
# above every room.
TOP = ("__init__", "__main__")
MAX_TOP_LEVEL_MODULES = 4  # besides __init__.py and __main__.py
MAX_LINES = 500


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. flaxtrainer.training.trainer
    target: str  # the flaxtrainer module imported
    file: str  # the importing file, relative to the package's parent folder
    line: int
    name: str | None  # for ``from X import name``: the name (None for ``import X``)
    module_level: bool  # False inside a function or method

    def __str__(self) -> str:
        return f"{self.file}:{self.line} -> {self.target}"


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _walk(node: ast.AST, in_function: bool = False):
    """Every node under ``node`` with whether it sits inside a function."""
    for child in ast.iter_child_nodes(node):
        yield child, in_function
        inner = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        yield from _walk(child, inner)


def imports(package: Path) -> list[Import]:
    """Every import of a module of ``package`` made by a module of ``package``."""
    known = modules(package)
    root = package.name
    found = []

    def deepest(name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) or None

    for module, path in known.items():
        file = path.relative_to(package.parent).as_posix()
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=file)
        for node, in_function in _walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = deepest(alias.name)
                    if target and alias.name.split(".")[0] == root:
                        found.append(
                            Import(module, target, file, node.lineno, None, not in_function)
                        )
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                if origin.split(".")[0] != root:
                    continue
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    target = sub if sub in known else deepest(origin)
                    if target:
                        found.append(
                            Import(module, target, file, node.lineno, alias.name, not in_function)
                        )
    return found


def room(module: str) -> str:
    """flaxtrainer.training.trainer -> training; flaxtrainer.errors -> errors; flaxtrainer ->
    __init__; flaxtrainer.__main__ -> __main__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycle_in(component: set[str], edges: dict[str, dict[str, Import]], start: str) -> list[Import]:
    """The shortest cycle through ``start`` in the strongly connected ``component``, as the
    imports that make it."""
    came_from: dict[str, tuple[str, Import]] = {}  # node -> (the node before it, the import)
    frontier = [start]
    while frontier:  # breadth first: the shortest cycle back to start
        following = []
        for node in frontier:
            for target, edge in sorted(edges.get(node, {}).items()):
                if target not in component:
                    continue
                if target == start:
                    cycle = [edge]
                    while node != start:
                        node, edge = came_from[node]
                        cycle.insert(0, edge)
                    return cycle
                if target not in came_from:
                    came_from[target] = (node, edge)
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """The cycles of the graph: in each strongly connected component of more than one node (or
    with a self-loop; found with Tarjan's algorithm), the shortest cycle through each node, each
    cycle once. ``edges[a][b]`` is one import of b by a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, {})):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, {}):
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    found: dict[frozenset, list[Import]] = {}
    for component in components:
        for start in sorted(component):
            cycle = _cycle_in(component, edges, start)
            found.setdefault(frozenset((e.source, e.target) for e in cycle), cycle)
    return list(found.values())


def _show(cycle: list[Import]) -> str:
    return " -> ".join(f"{edge.file}:{edge.line}" for edge in cycle) + f" -> {cycle[0].file}"


def module_cycles(package: Path) -> list[str]:
    edges: dict[str, dict[str, Import]] = {}
    for edge in imports(package):
        edges.setdefault(edge.source, {}).setdefault(edge.target, edge)
    return [_show(cycle) for cycle in cycles(edges)]


def upward_imports(package: Path) -> list[str]:
    """Imports of a higher room by a lower one, and modules in no room of FLOORS."""
    problems = []
    for module in modules(package):
        if room(module) not in FLOORS and room(module) not in TOP:
            problems.append(f"{module}: in no room of FLOORS (give its room a floor)")
    for edge in imports(package):
        source, target = room(edge.source), room(edge.target)
        if source in TOP or source not in FLOORS:
            continue
        if target in TOP or FLOORS.get(target, -1) > FLOORS[source]:
            problems.append(f"{edge} ({source}, floor {FLOORS[source]}, imports {target})")
    return problems


def same_floor_loops(package: Path) -> list[str]:
    """Loops among rooms of one floor (imports within a room do not count)."""
    edges: dict[str, dict[str, Import]] = {}
    for edge in imports(package):
        source, target = room(edge.source), room(edge.target)
        if source != target and source in FLOORS and FLOORS[source] == FLOORS.get(target):
            edges.setdefault(source, {}).setdefault(target, edge)
    return [" -> ".join(str(edge) for edge in cycle) for cycle in cycles(edges)]


def top_level_modules(package: Path) -> list[str]:
    return sorted(p.name for p in package.glob("*.py") if p.stem not in TOP)


def long_files(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found.append(f"{path.relative_to(package.parent).as_posix()}: {lines} lines")
    return found


def cli_imports_outside_cli(package: Path) -> list[str]:
    cli = f"{package.name}.cli"
    return [
        str(edge)
        for edge in imports(package)
        if (edge.target == cli or edge.target.startswith(cli + "."))
        and room(edge.source) not in ("cli", "__main__")
    ]


def callbacks_mentioning_training(package: Path) -> list[str]:
    """Any text naming the training room in callbacks/: an import under TYPE_CHECKING, a string
    annotation or a docstring alike."""
    pattern = re.compile(rf"{package.name}\.training\b|from \.\.training\b")
    found = []
    for path in sorted((package / "callbacks").rglob("*.py")):
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(text):
                found.append(
                    f"{path.relative_to(package.parent).as_posix()}:{number}: {text.strip()}"
                )
    return found


def private_imports(package: Path) -> list[str]:
    """Module-level ``from X import _name`` with X a module of the package."""
    return [
        f"{edge} imports {edge.name}"
        for edge in imports(package)
        if edge.module_level
        and edge.name
        and edge.name.startswith("_")
        and not (edge.name.startswith("__") and edge.name.endswith("__"))
    ]


# --- the rules, on flaxtrainer/ -------------------------------------------------------------


def test_the_package_is_found():
    found = modules(PACKAGE)
    assert {"flaxtrainer", "flaxtrainer.errors", "flaxtrainer.training.trainer"} <= set(found)
    assert len(imports(PACKAGE)) > 100


def test_no_import_cycle():
    found = module_cycles(PACKAGE)
    assert not found, "import cycles:\n" + "\n".join(found)


def test_rooms_import_only_lower_floors():
    found = upward_imports(PACKAGE)
    assert not found, "imports of a higher room:\n" + "\n".join(found)


def test_rooms_on_one_floor_do_not_import_each_other_in_a_loop():
    found = same_floor_loops(PACKAGE)
    assert not found, "rooms of one floor in a loop:\n" + "\n".join(found)


def test_few_top_level_modules():
    found = top_level_modules(PACKAGE)
    assert len(found) <= MAX_TOP_LEVEL_MODULES, f"top-level modules: {found}: give them a room"


def test_no_file_over_500_lines():
    found = long_files(PACKAGE)
    assert not found, f"over {MAX_LINES} lines:\n" + "\n".join(found)


def test_only_the_command_line_imports_the_command_line():
    found = cli_imports_outside_cli(PACKAGE)
    assert not found, "flaxtrainer.cli imported outside cli/:\n" + "\n".join(found)


def test_callbacks_never_mention_training():
    found = callbacks_mentioning_training(PACKAGE)
    assert not found, "callbacks/ names the training room:\n" + "\n".join(found)


def test_no_module_level_import_of_a_private_name():
    found = private_imports(PACKAGE)
    assert not found, "private names imported at module level:\n" + "\n".join(found)


# --- the checkers find what they are for: small packages that break each rule ---------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "flaxtrainer"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


GOOD = {
    "errors.py": "class UserError(Exception): ...\n",
    "__main__.py": "from flaxtrainer.cli.main import main\n",
    "runtime/__init__.py": "",
    "runtime/sharding.py": "from flaxtrainer.errors import UserError\n",
    "models/__init__.py": "from .bert import Bert\n",
    "models/bert.py": "from flaxtrainer.runtime import sharding\nclass Bert: ...\n",
    "data/__init__.py": "",
    "data/loader.py": "from flaxtrainer.models import Bert\n",
    "callbacks/__init__.py": "",
    "callbacks/base.py": "class Callback: ...\n",
    "training/__init__.py": "",
    "training/trainer.py": "from flaxtrainer.callbacks.base import Callback\n",
    "cli/__init__.py": "",
    "cli/main.py": "from flaxtrainer.training import trainer\ndef main(): ...\n",
}


def test_a_package_that_keeps_the_rules_passes(tmp_path):
    package = write_package(tmp_path, GOOD)
    assert {edge.target for edge in imports(package) if edge.source == "flaxtrainer.cli.main"} == {
        "flaxtrainer.training.trainer"
    }
    assert module_cycles(package) == []
    assert upward_imports(package) == []
    assert same_floor_loops(package) == []
    assert top_level_modules(package) == ["errors.py"]
    assert long_files(package) == []
    assert cli_imports_outside_cli(package) == []
    assert callbacks_mentioning_training(package) == []
    assert private_imports(package) == []


def test_a_cycle_through_a_type_checking_import_is_found(tmp_path):
    base = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from flaxtrainer.training.trainer import FlaxTrainer\n"
        "class Callback: ...\n"
    )
    package = write_package(tmp_path, {**GOOD, "callbacks/base.py": base})
    assert module_cycles(package) == [
        "flaxtrainer/callbacks/base.py:3 -> flaxtrainer/training/trainer.py:1 "
        "-> flaxtrainer/callbacks/base.py"
    ]
    assert upward_imports(package) == [
        "flaxtrainer/callbacks/base.py:3 -> flaxtrainer.training.trainer "
        "(callbacks, floor 4, imports training)"
    ]
    assert callbacks_mentioning_training(package) == [
        "flaxtrainer/callbacks/base.py:3: from flaxtrainer.training.trainer import FlaxTrainer"
    ]


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path):
    bert = "class Bert: ...\ndef load():\n    from . import Bert as B\n    return B\n"
    package = write_package(tmp_path, {**GOOD, "models/bert.py": bert})
    assert module_cycles(package) == [
        "flaxtrainer/models/__init__.py:1 -> flaxtrainer/models/bert.py:3 "
        "-> flaxtrainer/models/__init__.py"
    ]
    assert private_imports(package) == []  # inside a function, and not private


def test_an_upward_import_and_a_room_without_a_floor_are_found(tmp_path):
    files = {**GOOD, "runtime/sharding.py": "import flaxtrainer.models.bert\n", "odd/x.py": ""}
    package = write_package(tmp_path, files)
    assert upward_imports(package) == [
        "flaxtrainer.odd.x: in no room of FLOORS (give its room a floor)",
        "flaxtrainer/runtime/sharding.py:1 -> flaxtrainer.models.bert (runtime, floor 0, "
        "imports models)",
    ]


def test_a_loop_between_rooms_of_one_floor_is_found(tmp_path):
    files = {**GOOD, "models/hub.py": "from flaxtrainer.data import loader\n"}
    package = write_package(tmp_path, files)
    assert module_cycles(package) == []  # no module imports itself back
    assert same_floor_loops(package) == [
        "flaxtrainer/data/loader.py:1 -> flaxtrainer.models -> "
        "flaxtrainer/models/hub.py:1 -> flaxtrainer.data.loader"
    ]


def test_top_level_modules_and_long_files_are_counted(tmp_path):
    files = {**GOOD, **{f"m{i}.py": "x = 1\n" * (i * 200) for i in range(1, 5)}}
    package = write_package(tmp_path, files)
    assert top_level_modules(package) == ["errors.py", "m1.py", "m2.py", "m3.py", "m4.py"]
    assert long_files(package) == ["flaxtrainer/m3.py: 600 lines", "flaxtrainer/m4.py: 800 lines"]


def test_command_line_imports_outside_cli_are_found(tmp_path):
    files = {
        **GOOD,
        "__init__.py": "from . import cli\n",
        "training/export.py": "def f():\n    from ..cli.main import main\n",
    }
    package = write_package(tmp_path, files)
    assert cli_imports_outside_cli(package) == [
        "flaxtrainer/__init__.py:1 -> flaxtrainer.cli",
        "flaxtrainer/training/export.py:2 -> flaxtrainer.cli.main",
    ]


def test_callbacks_naming_training_in_a_string_are_found(tmp_path):
    files = {**GOOD, "callbacks/base.py": 'def f(t: "flaxtrainer.training.FlaxTrainer"): ...\n'}
    package = write_package(tmp_path, files)
    assert len(callbacks_mentioning_training(package)) == 1
    assert upward_imports(package) == []  # no import: only the text shows it


def test_module_level_private_imports_are_found(tmp_path):
    files = {
        **GOOD,
        "data/loader.py": (
            "from flaxtrainer.models.bert import _helper, Bert\n"
            "from flaxtrainer.models import __version__\n"
            "from os import _exit\n"
            "def f():\n    from flaxtrainer.models.bert import _inner\n"
        ),
    }
    package = write_package(tmp_path, files)
    assert private_imports(package) == [
        "flaxtrainer/data/loader.py:1 -> flaxtrainer.models.bert imports _helper"
    ]
