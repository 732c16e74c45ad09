"""benchmarks.efficiency: the synthetic in-context episode, one measured point of each architecture, the memory
limit that caps a point, and how capped points show on the page."""

from __future__ import annotations

import subprocess
import sys


from benchmarks.efficiency import Point, episode_shape, measure_in_this_process, synthetic_episode, table


def test_an_episode_holds_at_most_128_queries_and_one_target_column():
    assert episode_shape(256) == (128, 128) and episode_shape(8192) == (8064, 128) and episode_shape(128) == (64, 64)
    batch = synthetic_episode(96, 5)
    assert batch.values.shape == (96, 5) and batch.n_support == 48
    assert batch.target_mask[:, -1].all() and not batch.target_mask[:, :-1].any()
    assert int(batch.query_target_mask.sum()) == 48


def test_each_in_context_architecture_is_measured_with_the_shipped_config():
    for architecture in ("tab2d", "basis_icl"):
        point = measure_in_this_process(architecture, "block_sparse", rows=32, columns=9, repeats=1)
        assert point.architecture == architecture and not point.capped
        assert point.seconds > 0 and point.peak_mb >= 0 and point.forwards == 1


def test_a_slow_warm_up_is_the_points_only_timing():
    point = measure_in_this_process("tab2d", "dense", rows=16, columns=4, repeats=3, slow_seconds=0.0)
    assert point.forwards == 1 and point.seconds > 0
    assert measure_in_this_process("tab2d", "dense", rows=16, columns=4, repeats=3).forwards == 3


def test_a_point_beyond_its_memory_limit_fails_instead_of_taking_the_machine():
    code = ("import torch\nfrom benchmarks.efficiency import limit_memory\nlimit_memory(0.05)\n"
            "torch.empty(200 * 2**20, dtype=torch.uint8).fill_(1)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and ("memory" in done.stderr.lower() or "alloc" in done.stderr.lower())


def test_capped_points_are_marked_on_the_page():
    points = [Point("tab2d", "dense", 256, 16, seconds=0.5, peak_mb=40.0),
              Point("tab2d", "dense", 256, 1024, seconds=70.0, forwards=1, peak_mb=2000.0),
              Point("tab2d", "dense", 256, 2048, capped="time: over 120 s")]
    rows = table(points, "columns", (16, 1024, 2048))
    assert rows[2] == "| 16 | 0.500 s, 40 MB |"
    assert rows[3] == "| 1,024 | 70.000 s (1 forward), 2,000 MB |"
    assert rows[4] == "| 2,048 | capped (time: over 120 s) |"
