"""The fast loop leaves unimported only modules whose every test ``-m`` would deselect anyway."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.deselection import excludes_every_test_marked, module_markers

FAST_LOOP = "not slow and not browser and not processes and not s3"


@pytest.mark.parametrize(
    ("source", "markers"),
    [
        pytest.param("x = 1\n", frozenset(), id="none"),
        pytest.param("import pytest\npytestmark = pytest.mark.slow\n", frozenset({"slow"}), id="one"),
        pytest.param(
            "import pytest\npytestmark = [pytest.mark.browser, pytest.mark.processes]\n",
            frozenset({"browser", "processes"}),
            id="list",
        ),
        pytest.param(
            "import pytest\npytestmark = pytest.mark.skipif(True, reason='x')\n", None, id="with-arguments"
        ),
        pytest.param("import pytest\npytestmark = MARKS\n", None, id="computed"),
        pytest.param("def broken(:\n", None, id="not-python"),
    ],
)
def test_module_markers_are_read_only_when_plain(
    tmp_path: Path, source: str, markers: frozenset[str] | None
) -> None:
    module = tmp_path / "test_module.py"
    module.write_text(source)
    assert module_markers(module) == markers


@pytest.mark.parametrize(
    ("expression", "markers", "excluded"),
    [
        pytest.param(FAST_LOOP, {"slow"}, True, id="fast-loop-slow"),
        pytest.param(FAST_LOOP, {"browser", "processes"}, True, id="fast-loop-browser"),
        pytest.param(FAST_LOOP, set(), False, id="fast-loop-unmarked"),
        # A slow module may hold a test that also starts processes: "-m processes" selects it.
        pytest.param("processes", {"slow"}, False, id="another-marker-selects"),
        pytest.param("not s3", {"processes"}, False, id="not-excluded"),
        pytest.param("slow and not processes", {"slow", "processes"}, True, id="both-needed"),
        pytest.param("not (slow or processes)", {"processes"}, True, id="parentheses"),
        pytest.param("slow or s3", {"browser"}, False, id="a-test-may-add-s3"),
        pytest.param("not slow and", {"slow"}, False, id="malformed"),
        pytest.param("not slow(reason=1)", {"slow"}, False, id="marker-arguments"),
        pytest.param("", {"slow"}, False, id="no-expression"),
    ],
)
def test_a_module_is_left_out_only_when_none_of_its_tests_can_be_selected(
    expression: str, markers: set[str], excluded: bool
) -> None:
    assert excludes_every_test_marked(expression, frozenset(markers)) is excluded


def test_the_fast_loop_leaves_out_the_fuzzing_module_and_keeps_the_others() -> None:
    tests = Path(__file__).parent
    assert excludes_every_test_marked(FAST_LOOP, module_markers(tests / "test_fuzz_openapi.py"))
    assert not excludes_every_test_marked(FAST_LOOP, module_markers(tests / "test_upload_api.py"))
