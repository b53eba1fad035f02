"""The notebooks: committed executed, and they still run (at the reduced HYPERLOSS_QUICK size)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    assert {path.name for path in NOTEBOOKS} >= {"quickstart.ipynb", "naics_2d.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_committed_with_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    counts = [cell.execution_count for cell in code_cells]
    assert None not in counts, "every code cell must have been executed"
    assert counts == sorted(counts), "cells must have run top to bottom"
    for cell in code_cells:
        assert all(output.output_type != "error" for output in cell.outputs)
    images = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the committed notebook shows at least one picture"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_executes_at_the_quick_size(path, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERLOSS_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "spearman" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
