"""Which test modules ``-m`` leaves out entirely, decided before they are imported.

pytest imports every test module before ``-m`` deselects anything, so the fast loop used to
import the whole suite: the fuzzing module alone loads schemathesis and builds an app and its
tests (about 1.5 s). A module whose ``pytestmark`` gives every test in it a marker that the
expression excludes, whatever other markers each test adds, is skipped unimported; anything
this cannot decide (a ``pytestmark`` that is not plain ``pytest.mark.NAME`` items, markers with
arguments in the expression, an expression pytest would refuse) is imported as before, and
pytest then decides test by test.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable
from functools import cache
from pathlib import Path

_MOST_FREE_MARKERS = 8  # 2**8 evaluations at most; a longer expression is left to pytest


def module_markers(path: Path) -> frozenset[str] | None:
    """The markers ``pytestmark = pytest.mark.A`` or ``[pytest.mark.A, pytest.mark.B]`` in
    ``path`` gives every test in it (empty without one); None when it says more than that."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    markers: set[str] = set()
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else []
        if not any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in targets):
            continue
        value = statement.value
        for element in value.elts if isinstance(value, ast.List | ast.Tuple) else [value]:
            name = _plain_mark(element)
            if name is None:
                return None
            markers.add(name)
    return frozenset(markers)


def _plain_mark(node: ast.expr) -> str | None:
    """``NAME`` for the expression ``pytest.mark.NAME``, else None."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "mark"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "pytest"
    ):
        return node.attr
    return None


@cache
def excludes_every_test_marked(expression: str, markers: frozenset[str]) -> bool:
    """True when no test carrying ``markers`` (and any others) can match the ``-m`` expression."""
    if not expression.strip() or not markers or "=" in expression:  # "=": markers with arguments
        return False
    try:
        from _pytest.mark.expression import Expression  # pytest's own parser, so both read it alike

        compiled = Expression.compile(expression)
        free = sorted(compiled.idents() - markers)
    except Exception:  # another pytest, or an expression it refuses: let pytest decide
        return False
    if len(free) > _MOST_FREE_MARKERS:
        return False
    for values in itertools.product((False, True), repeat=len(free)):
        present = markers | frozenset(name for name, on in zip(free, values, strict=True) if on)
        if compiled.evaluate(_carrying(present)):
            return False
    return True


def _carrying(markers: frozenset[str]) -> Callable[..., bool]:
    """The matcher pytest evaluates an expression with, for a test carrying exactly ``markers``."""
    return lambda name, /, **_: name in markers
