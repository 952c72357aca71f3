"""The notebooks run top to bottom against a live local system, on small data."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


def execute(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return notebook


def outputs_text(notebook) -> str:
    return "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_timings_notebook(make_settings, start_dispatcher, start_api, monkeypatch):
    settings = make_settings(even_sum_block_bytes=1 << 20)  # the default 1 KiB blocks are for boundary tests
    start_dispatcher(settings)
    api_url = start_api(settings)
    monkeypatch.setenv("SPACETIME_API_URL", api_url)
    monkeypatch.setenv("SPACETIME_REPORTS_URL", settings.reports_url)
    notebook = execute("timings.ipynb")
    text = outputs_text(notebook)
    assert "lead_s" in text and "notebook-a" in text
    assert any(
        o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    ), "no plot drawn"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_even_sum_notebook(cluster, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    monkeypatch.setenv("SPACETIME_NOTEBOOK_MB", "1")
    notebook = execute("even_sum_on_dask.ipynb")
    assert "GB/s" in outputs_text(notebook)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"strip outputs of {path.name}"
