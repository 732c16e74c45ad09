"""benchmarks.gpu_throughput runs where a GPU box has torch but not Ray, MLflow or matplotlib, and says so
(exit 0) when there is no CUDA device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK_IMPORTS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("ray", "mlflow", "matplotlib"):
            raise ImportError(f"{name} is not installed on this machine")
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)]), "DS_ACCELERATOR": "cpu"}
    return subprocess.run([sys.executable, "-c", BLOCK_IMPORTS + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_zero():
    done = _run("""
        from benchmarks.gpu_throughput import main
        raise SystemExit(main([]))
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA device" in done.stdout


def test_cpu_mode_measures_a_row_records_its_context_and_needs_neither_ray_nor_mlflow(tmp_path):
    out = tmp_path / "gpu_throughput_cpu.md"
    done = _run(f"""
        import sys
        from benchmarks.gpu_throughput import main
        rc = main(["--device", "cpu", "--presets", "tiny", "--shapes", "16x8", "--steps", "1", "--warmup", "1",
                   "--compile", "off", "--modes", "torch", "--out", {str(out)!r}])
        assert not {{"ray", "mlflow"}} & set(sys.modules), "imported Ray or MLflow"
        raise SystemExit(rc)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| tiny | 16 x 8 | torch | off |"))
    step_ms, cells_per_s, tflops = (cell.strip() for cell in row.split("|")[5:8])
    assert float(step_ms) > 0 and float(cells_per_s.replace(",", "")) > 0 and float(tflops) > 0
    assert "- device: CPU" in text and "- date: " in text and "- commit: " in text
    assert not out.with_suffix(".png").exists()  # matplotlib absent: the PNG is skipped, not an error
