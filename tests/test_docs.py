"""The documentation runs: the Python blocks of README.md and docs/heads.md, and every module's doctests.

Everything runs in one child process, which writes one result per block and per module: the examples
seed the global random generators, change torch's thread count (rendering 3D Shapes images does) and
import optional packages, and none of that should leak into the other tests.

Run ``python tests/test_docs.py RESULTS.json`` to produce the results by hand.
"""

from __future__ import annotations

import doctest
import importlib
import io
import json
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/heads.md", "docs/tutorial.md")
DOCTEST_FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
CHILD_TIMEOUT_S = 300
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```\s*$", flags=re.DOTALL | re.MULTILINE)
_EXAMPLE_LINE = re.compile(r"^\s*>>> ", flags=re.MULTILINE)


def python_blocks(document: str) -> list[str]:
    """Sources of the fenced ```python blocks of ``document`` (relative to the repository), in order."""
    return _PYTHON_BLOCK.findall((ROOT / document).read_text(encoding="utf-8"))


def blocks_by_id() -> dict[str, str]:
    """``{"<document> block <number>": source}`` for every Python block, numbered from 1 per document."""
    return {f"{document} block {number}": source for document in DOCUMENTS
            for number, source in enumerate(python_blocks(document), start=1)}


def module_names() -> list[str]:
    """Every module of the package, found from its files (nothing is imported)."""
    names = []
    for path in sorted((ROOT / "metasparse").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _run_block(block_id: str, source: str) -> str | None:
    """Execute one block in a fresh namespace; ``None`` on success, else the traceback."""
    try:
        exec(compile(source, block_id, "exec"), {"__name__": "__main__"})
    except BaseException:
        return traceback.format_exc()
    return None


def _run_doctests(module_name: str) -> dict[str, object]:
    """Run one module's doctests; return the counts and the runner's report of any failure."""
    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder().find(module)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    source = Path(module.__file__).read_text(encoding="utf-8")
    return {
        "failed": runner.failures,
        "attempted": runner.tries,
        "found": sum(len(test.examples) for test in tests),
        "in_source": len(_EXAMPLE_LINE.findall(source)),
        "report": report.getvalue(),
    }


def run_documentation(results_path: Path) -> None:
    """Child process: run every block, then every module's doctests; write the results as JSON."""
    import warnings

    from metasparse.solvers import ConvergenceWarning

    warnings.filterwarnings("error", category=ConvergenceWarning)
    blocks = {block_id: _run_block(block_id, source) for block_id, source in blocks_by_id().items()}
    modules = {}
    for name in module_names():
        try:
            modules[name] = _run_doctests(name)
        except BaseException:
            modules[name] = {"error": traceback.format_exc()}
    results_path.write_text(json.dumps({"blocks": blocks, "modules": modules}), encoding="utf-8")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Run the child process once for this file's tests."""
    results_path = tmp_path_factory.mktemp("docs") / "results.json"
    child = subprocess.run([sys.executable, __file__, str(results_path)], capture_output=True, text=True,
                           timeout=CHILD_TIMEOUT_S, cwd=results_path.parent)
    if child.returncode != 0 or not results_path.exists():
        pytest.fail(f"the documentation run failed (exit {child.returncode}):\n"
                    f"{child.stdout[-3000:]}\n{child.stderr[-3000:]}")
    return json.loads(results_path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_has_python_blocks(document):
    assert python_blocks(document), f"{document} has no ```python block (did the fence syntax change?)"


@pytest.mark.parametrize("block_id", list(blocks_by_id()))
def test_documentation_block_runs(results, block_id):
    error = results["blocks"][block_id]
    if error is not None:
        lines = blocks_by_id()[block_id].splitlines()
        numbered = "\n".join(f"{number:4d}  {line}" for number, line in enumerate(lines, start=1))
        pytest.fail(f"{block_id} raised:\n{error}\n{block_id}:\n{numbered}")


@pytest.mark.parametrize("module_name", module_names())
def test_module_doctests_pass(results, module_name):
    outcome = results["modules"][module_name]
    assert "error" not in outcome, f"{module_name} could not be doctested:\n{outcome.get('error')}"
    assert outcome["failed"] == 0, (f"{module_name}: {outcome['failed']} of {outcome['attempted']} "
                                    f"doctest examples failed:\n{outcome['report']}")
    # an example doctest cannot find (in a comment, a nested function, a non-docstring string) never runs
    assert outcome["found"] == outcome["in_source"], (
        f"{module_name} has {outcome['in_source']} '>>>' lines but doctest finds {outcome['found']} "
        "examples: some are never run")


if __name__ == "__main__":
    run_documentation(Path(sys.argv[1]))
