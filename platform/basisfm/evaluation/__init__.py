"""Evaluation: suite protocol runner, baselines (four GBDTs and RandomForest), splits and the leaderboard (markdown, PNG, MLflow)."""

from basisfm.evaluation.baselines import BASELINE_NAMES, Baseline
from basisfm.evaluation.leaderboard import Leaderboard, ScoreRecord
from basisfm.evaluation.protocol import MODEL_NAMES, EvaluationResult, run_suite
from basisfm.evaluation.splits import SplitProtocol, make_split

__all__ = ["BASELINE_NAMES", "Baseline", "Leaderboard", "ScoreRecord", "MODEL_NAMES", "EvaluationResult",
           "run_suite", "SplitProtocol", "make_split"]
