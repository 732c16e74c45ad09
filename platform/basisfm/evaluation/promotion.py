"""Promotion wired to this run config: score a registered version against `@champion` by what users get from it.

A per-row model is scored with the masked-cell objective on the corpus's held-out tables (`ValidationSuite`). An
in-context model (basis_icl, tab2d) is scored by in-context prediction (`InContextSuite`): its held-out prior ratio,
its ratio on episodes of the corpus's held-out tables when a corpus is there, and with a suite file the suite's
median score of `basis-inference` with it, which decides when given.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from basisfm.config import RunConfig, with_overrides
from basisfm.errors import CheckpointError
from basisfm.tracking import PromotionDecision, promote, resolve_tracking_uri
from basisfm.tracking.mlflow_logger import make_client
from basisfm.tracking.store import check_tracking_store
from basisfm.train.evaluate import ValidationSuite
from basisfm.train.trainer import absolute_paths

IN_CONTEXT_ARCHITECTURES = ("basis_icl", "tab2d")


def latest_version(registered_name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    check_tracking_store(tracking_uri, must_exist=True)  # listing must not create an empty store at a mistyped path
    try:
        versions = make_client(tracking_uri).search_model_versions(f"name = '{registered_name}'")
    except MlflowException as exc:
        raise CheckpointError(f"cannot list versions of {registered_name!r} at {tracking_uri}: {exc}") from exc
    if not versions:
        raise CheckpointError(f"no registered model {registered_name!r} at {tracking_uri}; run `python -m jobs.pretrain` "
                              "first (it registers its checkpoint), or pass --tracking-uri where it was registered")
    return str(max(int(v.version) for v in versions))


class InContextSuite:
    """Scores a consolidated in-context checkpoint by in-context prediction of held-out tasks and tables.

    `suite(checkpoint_dir) -> {"val_prior_ratio", "val_prior_accuracy"[, "val_real_ratio", ...][, "suite_median_<metric>"]}`:
    the held-out prior tasks training validates on (`config.priors`; none when `train.prior_validation_tasks` is 0 and
    a corpus is there to decide, as for a run on real tables alone), episodes of the corpus's validation tables
    when `corpus.out_dir` holds a corpus, and with `suite_path` the median over the suite's tasks of
    `basis-inference`'s mean score over splits. The tasks are the same for every version scored.
    """

    def __init__(self, config: RunConfig, suite_path: str | Path | None = None):
        self.config = config
        self.suite_path = suite_path
        self._prior = None
        self._real = None

    @property
    def suite_metric(self) -> str | None:
        if self.suite_path is None:
            return None
        from basisfm.corpus.suite import load_suite
        from basisfm.evaluation.protocol import protocol_of

        return f"suite_median_{protocol_of(load_suite(self.suite_path)).metric}"

    def has_corpus(self) -> bool:
        from basisfm.corpus.manifest import MANIFEST_NAME

        return (Path(self.config.corpus.out_dir) / MANIFEST_NAME).is_file() and self.config.data.validation_tables > 0

    def __call__(self, checkpoint_dir: str | Path) -> dict[str, float]:
        from basisfm.losses import build_objective
        from basisfm.model.checkpoint import load_pretrained
        from basisfm.train.prior_validation import held_out_prior_tasks, held_out_ratio

        torch.manual_seed(self.config.train.seed)
        model = load_pretrained(checkpoint_dir)
        if model.config.architecture not in IN_CONTEXT_ARCHITECTURES:
            raise CheckpointError(f"checkpoint {str(checkpoint_dir)!r} is a {model.config.architecture!r} model, which does "
                                  "not predict in context; promote it by its validation loss (without --suite)")
        objective = build_objective(model, model.config, self.config.loss)
        scores: dict[str, float] = {}
        n_prior = self.config.train.prior_validation_tasks
        if n_prior == 0 and not self.has_corpus():
            n_prior = 64  # no held-out table to decide on: the prior's tasks must
        if n_prior:
            if self._prior is None:
                self._prior = held_out_prior_tasks(self.config.priors, n_prior, text_dim=model.config.text_dim,
                                                   max_cells=self.config.data.token_budget)
            scores.update(held_out_ratio(objective, self._prior))
        if self.has_corpus():
            if self._real is None:
                from basisfm.train.evaluate import load_validation_batches

                episodes = with_overrides(self.config, {"data.task": "episodes"})  # read as inference reads a table
                self._real = load_validation_batches(episodes, self.config.train.validation_batches)
            scores.update(held_out_ratio(objective, self._real, prefix="val_real_"))
        if self.suite_path is not None:
            scores[self.suite_metric] = self._suite_median(checkpoint_dir)
        return scores

    def _suite_median(self, checkpoint_dir: str | Path) -> float:
        from basisfm.evaluation import run_suite

        with tempfile.TemporaryDirectory(prefix="basisfm-promote-suite-") as out:
            result = run_suite(self.suite_path, models=["basis-inference"], out_dir=out, checkpoint=str(checkpoint_dir),
                               log_to_mlflow=False, progress=False)
        per_task: dict[str, list[float]] = {}
        for record in result.leaderboard.records:
            per_task.setdefault(record.task, []).append(record.score)
        means = [float(np.mean(s)) for s in per_task.values() if all(math.isfinite(v) for v in s)]
        return float(np.median(means)) if means else math.nan

    def deciding_metric(self) -> tuple[str, str]:
        """(metric, mode): the suite's median when a suite is given, else the real tables' ratio, else the prior's."""
        if self.suite_path is not None:
            return self.suite_metric, "max"
        return ("val_real_ratio" if self.has_corpus() else "val_prior_ratio"), "min"


def architecture_of(registered_name: str, version: str, tracking_uri: str) -> str:
    from basisfm.model.checkpoint import read_model_config
    from basisfm.tracking import download_checkpoint

    with tempfile.TemporaryDirectory(prefix="basisfm-promote-") as tmp:
        return read_model_config(download_checkpoint(registered_name, version, tracking_uri, tmp)).architecture


def promote_registered(config: RunConfig, version: str | int | None = None, metric: str | None = None,
                       mode: str | None = None, suite_path: str | Path | None = None) -> PromotionDecision:
    """Promote `version` (default: the newest) of `tracking.registered_model` to `tracking.champion_alias` if it
    beats the current holder: an in-context model by in-context prediction (`InContextSuite`, deciding by the
    suite's median with `suite_path`), a per-row one on the corpus's validation tables (`val_loss`)."""
    config = absolute_paths(config)
    tracking_uri = resolve_tracking_uri(config.tracking)
    name = config.tracking.registered_model
    candidate = str(version) if version is not None else latest_version(name, tracking_uri)
    if architecture_of(name, candidate, tracking_uri) in IN_CONTEXT_ARCHITECTURES:
        suite = InContextSuite(config, suite_path)
        chosen_metric, chosen_mode = suite.deciding_metric()
    else:
        if suite_path is not None:
            raise CheckpointError(f"{name} v{candidate} is a per-row model; --suite scores in-context models (their "
                                  "registered model, e.g. basisfm-icl): leave it out to promote by val_loss")
        suite, (chosen_metric, chosen_mode) = ValidationSuite(config), ("val_loss", "min")
    return promote(candidate, suite, registered_name=name, alias=config.tracking.champion_alias, tracking_uri=tracking_uri,
                   metric=metric or chosen_metric, mode=mode or chosen_mode)
