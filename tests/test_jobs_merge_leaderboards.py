"""jobs.merge_leaderboards: several jobs.evaluate runs become one leaderboard under chosen labels."""

from __future__ import annotations

import pytest

from basisfm.errors import ConfigError
from basisfm.evaluation.leaderboard import Leaderboard, ScoreRecord
from jobs._cli import run_main
from jobs.merge_leaderboards import main, merge, parse_run


def _run(tmp_path, name: str, scores: dict[str, list[float]], metric: str = "r2"):
    records = [ScoreRecord(task=f"t{i}", split=0, model=model, score=s, fit_seconds=1.0, predict_seconds=0.5, n_train=10, n_test=5)
               for model, values in scores.items() for i, s in enumerate(values)]
    Leaderboard(suite="suite", metric=metric, records=records).save(tmp_path / name)
    return tmp_path / name


def test_runs_merge_under_their_labels_and_the_median_is_recomputed(tmp_path, capsys):
    a = _run(tmp_path, "a", {"basis-inference": [0.1, 0.5, 0.9]})
    b = _run(tmp_path, "b", {"basis-inference": [0.2, 0.3, 0.4]})
    gbdt = _run(tmp_path, "gbdt", {"catboost": [0.7, 0.8, 0.6], "xgboost": [0.1, 0.2, 0.3]})
    board = merge([parse_run(f"text={a}"), parse_run(f"ordinal={b}"), parse_run(str(gbdt))])
    summary = board.summary().set_index("model")["median r2"]
    assert summary.to_dict() == pytest.approx({"text": 0.5, "ordinal": 0.3, "catboost": 0.7, "xgboost": 0.2})
    assert merge([parse_run(f"x={gbdt}")]).models == ["x catboost", "x xgboost"]  # several models keep their names
    assert main([f"text={a}", f"ordinal={b}", "--out", str(tmp_path / "merged")]) == 0
    assert "| ordinal | 0.300 |" in (tmp_path / "merged" / "leaderboard.md").read_text()
    assert "| text | 0.500 |" in capsys.readouterr().out


def test_a_suite_run_in_parts_merges_into_one_row(tmp_path):
    part_a = _run(tmp_path, "a", {"basis-inference": [0.1, 0.5]})
    records = [ScoreRecord(task="t2", split=0, model="basis-inference", score=0.9, fit_seconds=1.0, predict_seconds=0.5,
                           n_train=10, n_test=5)]
    Leaderboard(suite="suite", metric="r2", records=records).save(tmp_path / "b")
    board = merge([parse_run(f"s4={part_a}"), parse_run(f"s4={tmp_path / 'b'}")])
    assert board.models == ["s4"] and board.summary().set_index("model").loc["s4", "median r2"] == pytest.approx(0.5)


def test_clashing_names_other_metrics_and_missing_runs_are_refused(tmp_path, capsys):
    a = _run(tmp_path, "a", {"basis-inference": [0.1]})
    with pytest.raises(ConfigError, match="already scored"):
        merge([parse_run(str(a)), parse_run(str(a))])
    rmse = _run(tmp_path, "rmse", {"other": [1.0]}, metric="rmse")
    with pytest.raises(ConfigError, match="not one leaderboard"):
        merge([parse_run(str(a)), parse_run(str(rmse))])
    with pytest.raises(ConfigError, match="no scores.json"):
        merge([parse_run(str(tmp_path / "nowhere"))])
    with pytest.raises(SystemExit) as exit_:  # the command line: one error line naming the directory, exit 2
        run_main(lambda: main([str(tmp_path / "nowhere")]))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'} holds no scores.json: is it the --out directory of a finished jobs.evaluate run?\n"
