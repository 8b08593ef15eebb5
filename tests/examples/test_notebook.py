"""The example notebook, examples/explore_a_run.ipynb, never rots: it is executed here from top
to bottom in a fresh Python kernel (nbclient), every figure it draws comes out, and it says the
same as its jupytext script, examples/explore_a_run.py (the file to edit; `jupytext --sync
examples/explore_a_run.py` writes the notebook from it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "explore_a_run.ipynb"
SCRIPT = NOTEBOOK.with_suffix(".py")
FIGURES = 5  # attention pattern, logit lens, patching grid, decay probe, dual-model gaps


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_notebook_and_its_script_say_the_same():
    import jupytext

    notebook = jupytext.read(NOTEBOOK)
    assert _cells(notebook) == _cells(jupytext.read(SCRIPT, fmt="py:percent"))
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    # committed without outputs: CI runs it, and a diff shows only what changed in the code
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_executes_and_draws_every_figure(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch: tiny models, a busy CPU
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel is this interpreter's own (ipykernel's python3 spec runs sys.executable)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # a cell that raises fails the test here (CellExecutionError)

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == FIGURES
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "blocks.1.hook_resid_post" in text
    # the dual model after one step is random-feature attention, to rounding
    gap = float(re.search(r"m = 256: max gap (\S+)", text).group(1))
    assert gap < 1e-10
    head = re.search(r"softmax on \(q, K, V\) vs the head's output: (\S+);", text)
    assert float(head.group(1)) < 1e-10  # the head's (q, K, V) are read right
