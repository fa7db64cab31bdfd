"""Every notebook in nbs/ executes top to bottom in a real Jupyter kernel, in fast mode
(FASTRL_LITE_FAST=1: the same cells with far fewer env steps and seeds), and the committed
notebooks carry the outputs of their full-length run."""
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NBS = sorted((Path(__file__).resolve().parent.parent / "nbs").glob("*.ipynb"))
KERNEL = "fastrl-lite-tests"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    "A kernel spec that runs this interpreter, so the notebooks see the package under test."
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fastrl_lite tests", "language": "python"}))
    return root


def test_the_notebooks_are_there():
    assert {"00_quickstart.ipynb", "01_pipes.ipynb", "03_experiments.ipynb"} <= {p.name for p in NBS}


def execute(nb, workdir, kernel_dir, monkeypatch):
    """Run `nb` in fast mode in a fresh kernel working in `workdir` (so the GIFs the notebooks write
    do not land in the repository). A cell that raises makes this raise CellExecutionError with the
    cell and its traceback."""
    monkeypatch.setenv("FASTRL_LITE_FAST", "1")
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    NotebookClient(nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, kernel_dir, tmp_path, monkeypatch):
    nb = execute(nbformat.read(path, as_version=4), tmp_path, kernel_dir, monkeypatch)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_a_raising_cell_fails_the_run(kernel_dir, tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; fast = os.environ['FASTRL_LITE_FAST']"),
                                         nbformat.v4.new_code_cell("raise ValueError(f'fast mode is {fast}')")])
    with pytest.raises(CellExecutionError, match="fast mode is 1"):
        execute(nb, tmp_path, kernel_dir, monkeypatch)


@pytest.mark.parametrize("path", NBS, ids=lambda p: p.name)
def test_committed_notebook_carries_its_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "execute the notebook before committing it"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run top to bottom, once"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"], "warnings in the saved outputs"
    mimes = {m for o in outputs for m in o.get("data", {})}
    assert "image/png" in mimes, "the saved notebook shows no plot"
    assert path.stat().st_size < 600_000, "keep saved notebooks small (smaller GIFs, fewer frames)"
