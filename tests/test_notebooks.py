"""The committed report notebooks: clean (no outputs), parameterised, thin, and token-free."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PARAMETERS = {
    "model_rca.ipynb": {"store", "run_id", "model_id"},
    "catalog_rca.ipynb": {"store", "run_id", "compare_run_id"},
}
SECTIONS = {
    "model_rca.ipynb": ["## Summary", "## Evidence", "### Catalog entry", "### Router model list",
                        "### Probe attempts", "### History across runs", "## Why", "## Recommendations",
                        "## Conclusion"],
    "catalog_rca.ipynb": ["## Summary", "## Totals per reason", "## Totals per pipeline tag",
                          "## Most-failing authors", "## Changes against the compared run", "## Blocklist",
                          "## Conflicting evidence"],
}


def dirty_cells(nb: nbformat.NotebookNode) -> list[str]:
    """Why a notebook is not clean: code cells with outputs or execution counts."""
    problems = []
    for n, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"cell {n} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {n} has an execution count")
    return problems


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def test_every_notebook_is_known():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(PARAMETERS)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert dirty_cells(nb) == []


def test_a_notebook_with_outputs_fails_the_check(tmp_path):
    nb = copy.deepcopy(_read("model_rca.ipynb"))
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="leftover\n")]
    code.execution_count = 3
    nbformat.write(nb, tmp_path / "dirty.ipynb")
    assert dirty_cells(nbformat.read(tmp_path / "dirty.ipynb", as_version=4)) == [
        "cell 1 has outputs", "cell 1 has an execution count"]


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameters(name):
    found = papermill.inspect_notebook(str(NOTEBOOKS / name))
    assert set(found) == PARAMETERS[name]
    # Empty run ids mean "the latest successful run" / "the previous successful run".
    assert found["run_id"]["default"] == '""' and found["store"]["default"] == '""'
    assert all(p["help"] for p in found.values() if p["name"] != "model_id")


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_exactly_one_parameters_cell(name):
    tagged = [c for c in _read(name).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_sections_are_markdown_headings(name):
    headings = [line for c in _read(name).cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("#")]
    assert all(section in headings for section in SECTIONS[name]), headings


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_cells_are_thin_and_token_free(name):
    """Each code cell is at most one ``analysis`` call plus one display; nothing reads the environment."""
    for cell in _read(name).cells:
        if cell.cell_type != "code":
            continue
        assert "HF_TOKEN" not in cell.source and "environ" not in cell.source
        if "parameters" in cell.metadata.get("tags", []):
            continue
        tree = ast.parse(cell.source)
        if all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body):
            continue
        calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
        assert len([c for c in calls if c.startswith("rs.")]) == 1, cell.source
        assert set(calls) - {"display"} <= {c for c in calls if c.startswith("rs.")}, cell.source
        assert calls.count("display") <= 1, cell.source
