"""Runs a suite file's protocol: every selected model on the same seeded splits of every selected task.

The Basis models are `basisfm.estimators` regressors/classifiers with one fine-tuning strategy each;
the baselines are the four GBDT libraries at default settings. Results become a `Leaderboard`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from basisfm.progress import progress_bar, write_line

from basisfm.errors import ConfigError
from basisfm.evaluation.baselines import BASELINE_NAMES, Baseline
from basisfm.evaluation.leaderboard import Leaderboard, ScoreRecord
from basisfm.evaluation.splits import SplitProtocol, make_split, rows_with_usable_target, split_seeds

BASIS_STRATEGIES = {"basis-inference": "inference", "basis-base-ft": "base-ft", "basis-peft": "peft"}
MODEL_NAMES = (*BASIS_STRATEGIES, *BASELINE_NAMES)
DEFAULT_MODELS = ("basis-base-ft", *BASELINE_NAMES)
REGRESSION_METRICS = ("r2", "rmse", "mae")
CLASSIFICATION_METRICS = ("accuracy",)
PARTIAL_SCORES = "scores.partial.jsonl"  # one JSON record per finished (task, split, model) run


@dataclass
class EvaluationResult:
    leaderboard: Leaderboard
    paths: dict[str, Path]
    mlflow_run_id: str | None
    wall_seconds: float
    notes: list[str] = field(default_factory=list)


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn import metrics as skm

    if metric == "r2":
        return float(skm.r2_score(y_true, y_pred))
    if metric == "rmse":
        return float(np.sqrt(skm.mean_squared_error(y_true, y_pred)))
    if metric == "mae":
        return float(skm.mean_absolute_error(y_true, y_pred))
    if metric == "accuracy":
        return float(np.mean(np.asarray(y_true).astype(str) == np.asarray(y_pred).astype(str)))
    raise ConfigError(f"suite protocol metric {metric!r} is not supported; use one of {[*REGRESSION_METRICS, *CLASSIFICATION_METRICS]}")


def check_models(models: list[str] | tuple[str, ...] | None) -> list[str]:
    chosen = list(models or DEFAULT_MODELS)
    unknown = [m for m in chosen if m not in MODEL_NAMES]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}; choose from {list(MODEL_NAMES)}")
    return list(dict.fromkeys(chosen))


def make_model(name: str, task_type: str, seed: int, checkpoint: str | None, basis_params: dict[str, Any]):
    """A fresh, unfitted model for one (task, split) run."""
    if name in BASELINE_NAMES:
        return Baseline(name, task=task_type, seed=seed)
    from basisfm.estimators import BasisClassifier, BasisRegressor

    cls = BasisRegressor if task_type == "regression" else BasisClassifier
    return cls(checkpoint=checkpoint, strategy=BASIS_STRATEGIES[name], random_state=seed, progress=False, **basis_params)


def run_suite(
    suite_path: str | Path,
    models: list[str] | None = None,
    tasks: list[str] | None = None,
    splits: list[int] | None = None,
    out_dir: str | Path = "runs/eval",
    *,
    checkpoint: str | None = "default",
    model_checkpoints: dict[str, str | None] | None = None,
    basis_params: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    experiment: str = "basisfm-eval",
    log_to_mlflow: bool = True,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate `models` on the suite's tasks and splits; write and log the leaderboard under `out_dir`.

    `tasks` selects tasks by id (or by their table name, e.g. "diamonds"); `splits` selects split seeds.
    `checkpoint` (a directory, `models:/name@alias`, a shipped checkpoint's name, or None: from scratch) is
    resolved once and shared by all Basis runs; "default" gives each Basis model the checkpoint its estimator
    starts from by default (`checkpoint_name()`: the shipped in-context one for `basis-inference`, ...);
    `model_checkpoints` gives a Basis model its own (e.g. `{"basis-inference": "in_context"}`: the shipped
    in-context checkpoint in context beside a per-row champion fine-tuned).
    """
    from basisfm.corpus.suite import load_suite, load_task_frame

    started = time.perf_counter()
    models = check_models(models)
    suite = load_suite(suite_path)
    protocol = protocol_of(suite)
    task_type = "classification" if protocol.metric in CLASSIFICATION_METRICS else "regression"
    selected_tasks = select_tasks(suite, tasks)
    seeds = split_seeds(protocol, splits)
    notes: list[str] = []
    unknown = sorted(set(model_checkpoints or {}) - set(BASIS_STRATEGIES))
    if unknown:
        raise ConfigError(f"model_checkpoints names {unknown}: only Basis models take a checkpoint ({sorted(BASIS_STRATEGIES)})")
    checkpoints: dict[str, str | None] = {}
    if any(m in BASIS_STRATEGIES for m in models):
        from basisfm.pretrained.checkpoints import resolve_checkpoint
        from basisfm.pretrained import DEFAULT_NAME

        resolved: dict[str | None, str | None] = {}  # each checkpoint resolved (a registry one downloaded) once
        for model_name in (m for m in models if m in BASIS_STRATEGIES):
            wanted = (model_checkpoints or {}).get(model_name, checkpoint)
            if wanted == DEFAULT_NAME:  # as the estimator would choose for this strategy and task
                wanted = make_model(model_name, task_type, 0, wanted, {}).checkpoint_name()
            if wanted not in resolved:
                found = resolve_checkpoint(wanted, tracking_uri=tracking_uri)
                resolved[wanted] = None if found is None else str(found)
            checkpoints[model_name] = resolved[wanted]
        for value in dict.fromkeys(checkpoints.values()):
            users = ", ".join(m for m, c in checkpoints.items() if c == value)
            where = f" ({users})" if len(set(checkpoints.values())) > 1 else ""
            notes.append(f"basis checkpoint{where}: {value or 'none (from scratch: a freshly initialised model of the preset)'}")

    leaderboard = Leaderboard(suite=suite_name(suite, suite_path), metric=protocol.metric)
    runs = [(task, seed, model) for task in selected_tasks for seed in seeds for model in models]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Every finished run is appended here at once: a long evaluation that dies halfway keeps its scores.
    partial = out / PARTIAL_SCORES
    partial.write_text("")
    bar = progress_bar(total=len(runs), desc="evaluate", unit="run", disable=not progress)
    for task in selected_tasks:
        tid = task_id(task)
        frame = rows_with_usable_target(load_task_frame(task), task.target, table=tid)
        features, target = frame.drop(columns=[task.target]), frame[task.target]
        for seed in seeds:
            split = make_split(len(frame), seed, protocol)
            x_train, x_test = features.iloc[split.train_rows], features.iloc[split.test_rows]
            y_train, y_test = target.iloc[split.train_rows], target.iloc[split.test_rows]
            for model_name in models:
                bar.set_postfix_str(f"{tid.split('/')[-1]} s{seed} {model_name}")
                record = _run_one(model_name, task_type, protocol.metric, tid, seed, checkpoints.get(model_name), basis_params or {},
                                  x_train, y_train, x_test, y_test)
                leaderboard.records.append(record)
                with partial.open("a") as f:
                    f.write(json.dumps(asdict(record), allow_nan=True) + "\n")
                if progress:
                    write_line(f"{tid} split {seed} {model_name}: {protocol.metric} {record.score:.4f} "
                               f"(fit {record.fit_seconds:.1f}s, predict {record.predict_seconds:.1f}s)")
                bar.update(1)
    bar.close()

    paths = leaderboard.save(out)
    run_id = None
    if log_to_mlflow:
        from basisfm.evaluation.mlflow_logging import log_leaderboard

        params = {"suite": str(suite_path), "models": ",".join(models), "tasks": ",".join(task_id(t) for t in selected_tasks),
                  "splits": ",".join(map(str, seeds)), "checkpoint": _checkpoint_param(checkpoints),
                  **{f"basis.{k}": v for k, v in (basis_params or {}).items()}}
        run_id = log_leaderboard(leaderboard, paths, params=params, tracking_uri=tracking_uri, experiment=experiment)
    return EvaluationResult(leaderboard, paths, run_id, time.perf_counter() - started, notes)


def _checkpoint_param(checkpoints: dict[str, str | None]) -> str:
    """The MLflow `checkpoint` param: the one checkpoint, or `model=checkpoint` pairs when the models differ."""
    values = set(checkpoints.values())
    if len(values) <= 1:
        return (values.pop() if values else None) or "from-scratch"
    return ",".join(f"{m}={c or 'from-scratch'}" for m, c in checkpoints.items())


def _run_one(model_name, task_type, metric, tid, seed, checkpoint, basis_params, x_train, y_train, x_test, y_test) -> ScoreRecord:
    model = make_model(model_name, task_type, seed, checkpoint, basis_params)
    # A model that fails on one task is recorded as failed with its error, so a long run still finishes
    # and the leaderboard shows the failure instead of silently dropping the task.
    fit_s = predict_s = 0.0
    try:
        t0 = time.perf_counter()
        model.fit(x_train, y_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = model.predict(x_test)
        predict_s = time.perf_counter() - t0
        value = score(metric, np.asarray(y_test), np.asarray(pred))
        error = None
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded in the leaderboard, see above
        value, error = float("nan"), f"{type(exc).__name__}: {str(exc)[:300]}"
        write_line(f"warning: {model_name} failed on {tid} split {seed}: {error}")
    return ScoreRecord(task=tid, split=seed, model=model_name, score=value, fit_seconds=fit_s, predict_seconds=predict_s,
                       n_train=len(x_train), n_test=len(x_test), error=error)


# ---------------------------------------------------------------- the suite objects of basisfm.corpus.suite


def protocol_of(suite) -> SplitProtocol:
    p = suite.protocol
    get = (lambda k, d: p.get(k, d)) if isinstance(p, dict) else (lambda k, d: getattr(p, k, d))
    defaults = SplitProtocol()
    return SplitProtocol(
        splits=int(get("splits", defaults.splits)),
        test_fraction=float(get("test_fraction", defaults.test_fraction)),
        max_train_rows=int(get("max_train_rows", defaults.max_train_rows)),
        max_test_rows=int(get("max_test_rows", defaults.max_test_rows)),
        metric=str(get("metric", defaults.metric)),
    )


def task_id(task) -> str:
    return str(task.id)


def suite_name(suite, path) -> str:
    return str(getattr(suite, "name", None) or Path(path).stem)


def select_tasks(suite, wanted: list[str] | None) -> list:
    if not wanted:
        return list(suite.tasks)
    by_key: dict[str, Any] = {}
    for task in suite.tasks:
        tid = task_id(task)
        by_key[tid] = task
        by_key.setdefault(tid.split("/")[-1], task)
    missing = [w for w in wanted if w not in by_key]
    if missing:
        raise ConfigError(f"suite has no task(s) {missing}; its tasks are {[task_id(t) for t in suite.tasks]}")
    return list(dict.fromkeys(by_key[w] for w in wanted))
