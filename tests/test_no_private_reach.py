"""No module of flaxtrainer reads another object's underscore attributes.

Every ``X._name`` (one leading underscore, not a dunder) in ``flaxtrainer/`` must have ``X`` be
the name ``self`` or ``cls``: collaborators talk through public names, so a room can change
its internals without breaking another. Parsed with ``ast``, so strings, comments and
``getattr(x, "_name")`` do not count.

Checked room by room (each subpackage or top-level module of ``flaxtrainer``). The only
exceptions are the private APIs of other libraries that flaxtrainer uses on purpose, listed
with the reason in :data:`THIRD_PARTY_PRIVATE` (file -> expression -> why).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import flaxtrainer

PACKAGE = Path(flaxtrainer.__file__).parent

#: Private APIs of other libraries used on purpose, each with why there is no public way.
THIRD_PARTY_PRIVATE = {
    "flaxtrainer/callbacks/writers.py": {
        "self._writer._get_file_writer": "tensorboardX's SummaryWriter has no public way to add "
        "a raw hparams Summary; this returns its event file writer (reopened if closed)",
    },
    "flaxtrainer/runtime/distributed.py": {
        "clusters.ClusterEnv._cluster_types": "JAX's cluster detectors (SLURM, Open MPI, TPU, "
        "Kubernetes) in JAX's order; guarded by tests/runtime/test_jax_private_api.py",
    },
}


def private_reaches(source: str) -> list[tuple[int, str]]:
    """``(line, expression)`` of each ``X._name`` in ``source`` where ``X`` is not the name
    ``self`` or ``cls``, in line order."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") and node.attr.endswith("__"):
            continue  # a dunder: __dict__, __name__, ...
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append((node.lineno, ast.unparse(node)))
    return sorted(found)


def rooms() -> list[str]:
    """Each subpackage and top-level module of flaxtrainer (``errors.py`` is ``errors``)."""
    names = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    names |= {p.stem for p in PACKAGE.glob("*.py")}
    return sorted(names)


def room_files(room: str) -> list[Path]:
    folder = PACKAGE / room
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{room}.py"]


@pytest.mark.parametrize("room", rooms())
def test_no_module_reads_another_objects_private_attributes(room):
    offenders = []
    for path in room_files(room):
        name = str(path.relative_to(PACKAGE.parent))
        allowed = THIRD_PARTY_PRIVATE.get(name, {})
        for line, expression in private_reaches(path.read_text(encoding="utf-8")):
            if expression not in allowed:
                offenders.append(f"{name}:{line}: {expression}")
    assert not offenders, (
        f"flaxtrainer/{room} reads underscore attributes of objects other than self/cls "
        "(give them public names, or pass what is needed in):\n  " + "\n  ".join(offenders)
    )


def test_each_third_party_exception_is_still_used():
    for name, expressions in THIRD_PARTY_PRIVATE.items():
        used = {e for _, e in private_reaches((PACKAGE.parent / name).read_text(encoding="utf-8"))}
        assert set(expressions) <= used, (
            f"{name}: drop the stale exception(s) {set(expressions) - used}"
        )


def test_every_module_is_in_a_checked_room():
    checked = {path for room in rooms() for path in room_files(room)}
    assert checked == set(PACKAGE.rglob("*.py"))


def test_the_check_finds_reaches_and_spares_self_cls_dunders_and_getattr():
    source = (
        "class A:\n"
        "    def f(self, other):\n"
        "        self._mine = cls._theirs_too = other.public\n"
        "        return (other._theirs, self.x._deeper, super()._parent,\n"
        "                getattr(other, '_named'), other.__dict__)\n"
    )
    assert private_reaches(source) == [
        (4, "other._theirs"),
        (4, "self.x._deeper"),
        (4, "super()._parent"),
    ]
