"""basisfm.progress: a redrawing bar on a terminal, a line every tenth of the work anywhere else."""

from __future__ import annotations

import io

from tqdm import tqdm

from basisfm.progress import LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_to_a_file_it_prints_a_line_at_start_and_every_tenth_and_never_redraws():
    out = io.StringIO()
    bar = progress_bar(total=1000, desc="ingest", unit="table", file=out)
    assert isinstance(bar, LineProgress)
    for i in range(1000):
        bar.set_postfix(ingested=i, refresh=False)
        bar.update(1)
    bar.close()
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text  # no carriage-return redraws, no cursor moves
    assert len(lines) == 11, lines  # 0%, 10%, ..., 100%
    assert lines[0].startswith("ingest:   0%") and "1000/1000" in lines[-1] and "ingested=999" in lines[-1]


def test_stopping_early_says_where_and_iteration_closes_it():
    out = io.StringIO()
    bar = progress_bar(total=10, desc="pretrain", unit="step", initial=3, file=out)
    bar.update(2)
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "5/10" in lines[-1]
    out = io.StringIO()
    assert list(progress_bar(range(4), desc="variants", file=out)) == [0, 1, 2, 3]
    assert out.getvalue().splitlines()[-1].startswith("variants: 100%")


def test_disabled_prints_nothing_and_a_terminal_gets_tqdm():
    out = io.StringIO()
    bar = progress_bar(total=5, disable=True, file=out)
    bar.update(5)
    bar.close()
    assert out.getvalue() == ""
    terminal = _Terminal()
    bar = progress_bar(total=5, desc="x", file=terminal)
    assert isinstance(bar, tqdm)
    bar.close()
