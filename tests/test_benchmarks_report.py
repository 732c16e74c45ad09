"""benchmarks/_report.py: the one tail every benchmark ends with (markdown + PNG on disk, both in MLflow)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import benchmarks._report as report

NOT_BENCHMARKS = {"index"}  # benchmarks.index reads the results pages; it measures nothing
BENCHMARKS = sorted(p.stem for p in Path(report.__file__).parent.glob("*.py")
                    if not p.stem.startswith("_") and p.stem not in NOT_BENCHMARKS)


def test_publish_writes_both_files_and_logs_them_to_mlflow(tmp_path, monkeypatch, capsys):
    from basisfm.tracking.mlflow_logger import make_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")

    def render_png(path: Path) -> Path:
        fig, ax = report.pyplot().subplots()
        ax.plot([0, 1], [1, 0])
        return report.save_figure(fig, path)

    # out_dir given: publish's default is bound when it is defined, so patching RESULTS_DIR alone wrote
    # benchmarks/results/demo.{md,png} into the repository
    md_path, png_path, where = report.publish("demo", "# demo\n\n| a |\n| - |\n| 1 |\n", render_png,
                                              params={"steps": 3}, metrics={"cells_per_s": 12.5},
                                              out_dir=tmp_path / "results")
    assert md_path.parent == tmp_path / "results"
    assert md_path.read_text().startswith("# demo") and png_path.read_bytes()[:4] == b"\x89PNG"
    assert "| a |" in capsys.readouterr().out
    run_id = where.rsplit("run ", 1)[1].rstrip(")")
    run = make_client(uri).get_run(run_id)
    assert run.data.params == {"steps": "3"} and run.data.metrics == {"cells_per_s": 12.5}
    assert sorted(a.path for a in make_client(uri).list_artifacts(run_id)) == ["demo.md", "demo.png"]
    # artifacts sit next to the sqlite store, not in ./mlruns of the working directory
    assert (tmp_path / "mlartifacts").is_dir()


def test_a_tracking_failure_only_warns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'not-a-dir' / 'x' / 'mlflow.db'}")
    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    assert report.log_to_mlflow("demo", {}, {}, []) is None
    assert "could not log to MLflow" in capsys.readouterr().err


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_ends_with_publish_and_logs_nothing_itself(name):
    module = importlib.import_module(f"benchmarks.{name}")
    source = Path(module.__file__).read_text()
    tree = ast.parse(source)
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    called = calls | {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "publish" in calls
    # It never logs by itself (a `log_to_mlflow=False` keyword handed to another API is not a call).
    assert "log_to_mlflow" not in called and "savefig" not in source and ".write_text(markdown" not in source


def test_page_context_says_how_to_rerun_where_it_ran_and_when():
    import torch

    context = report.page_context("large_tables", ["--tasks", "diamonds", "a b"], machine="load average 2.0 at the end",
                                  extra={"total minutes": 1.5})
    assert list(context) == ["command", "machine", "total minutes", "commit", "date"]
    assert context["command"] == "python -m benchmarks.large_tables --tasks diamonds 'a b'"  # quoted as a shell reads it
    assert f"{torch.get_num_threads()} thread(s); load average 2.0 at the end" in context["machine"]
    assert context["total minutes"] == "1.5" and context["date"].endswith("UTC")
