"""The end-to-end workflow `make demo` runs: ingest (public suite excluded) → pretrain → register → promote →
a small leaderboard: where the models stand against CatBoost on three public-suite tables."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from basisfm.config import RunConfig
from basisfm.pretrained import IN_CONTEXT_NAME

# The demo's last screen: the shipped in-context checkpoint (no gradient step) and the champion fine-tuned, beside
# CatBoost, on three small public-suite tables and one split: a couple of minutes on 2 cores, and an honest picture
# of the model. The champion the demo pretrains reads one row at a time, so in context it is the shipped one that predicts.
LEADERBOARD_TASKS = ("Boston", "concrete", "Carseats")
LEADERBOARD_MODELS = ("basis-inference", "basis-base-ft", "catboost")
LEADERBOARD_CHECKPOINTS = {"basis-inference": IN_CONTEXT_NAME}  # the other Basis model: the champion
LEADERBOARD_SPLIT = 0


@dataclass
class DemoSummary:
    corpus_summary: str
    pretrain_summary: str
    promotion_summary: str
    champion: str
    tracking_uri: str
    ui_command: str
    wall_seconds: float
    leaderboard_summary: str = ""

    def render(self) -> str:
        rule = "=" * 72
        return "\n".join([
            rule,
            f"basisfm demo finished in {self.wall_seconds / 60:.1f} min",
            rule,
            self.corpus_summary,
            "",
            self.pretrain_summary,
            "",
            self.promotion_summary,
            "",
            *([self.leaderboard_summary, ""] if self.leaderboard_summary else []),
            f"champion:      {self.champion}",
            f"MLflow store:  {self.tracking_uri}",
            f"open the UI:   {self.ui_command}",
            rule,
        ])


def run_demo(config: RunConfig, leaderboard_suite: str | Path | None = None) -> DemoSummary:
    """Run the stages in order and return their results for the job to print.

    Each stage shows its own progress; no summary is printed here: `DemoSummary.render()` is the one
    screen that holds them, printed by `jobs.demo`. With `leaderboard_suite` (a suite file), a fourth stage
    scores the champion against CatBoost on `LEADERBOARD_TASKS` and logs the leaderboard to MLflow.
    """
    from basisfm.corpus.ingest import ingest
    from basisfm.errors import BasisError
    from basisfm.tracking import resolve_tracking_uri, ui_command
    from basisfm.evaluation.promotion import promote_registered
    from basisfm.train import pretrain

    started = time.monotonic()
    stages = 4 if leaderboard_suite is not None else 3
    print(f"[1/{stages}] ingest: building the corpus (public suite and its near-duplicates excluded)", flush=True)
    report = ingest(config.corpus)
    if report.tables == 0:
        raise BasisError(f"ingest into {config.corpus.out_dir} produced no tables; see its ingest_report.json")

    workers = "1 local process" if config.train.launcher == "local" else f"{config.train.num_workers} Ray workers"
    print(f"[2/{stages}] pretrain: {workers}, ZeRO-{config.train.zero_stage}, "
          f"{config.train.steps} steps, model preset {config.model.preset!r}", flush=True)
    result = pretrain(config)

    print(f"[3/{stages}] promote: candidate vs current champion on the validation tables", flush=True)
    tracking_uri = resolve_tracking_uri(config.tracking)
    name, alias = config.tracking.registered_model, config.tracking.champion_alias
    if result.registered_version is None:
        promotion = "not promoted: the checkpoint was not registered (tracking unavailable); see above"
        champion = "(none)"
    else:
        decision = promote_registered(config, result.registered_version)
        promotion = decision.summary()
        version = decision.candidate_version if decision.promoted else decision.champion_version
        champion = f"{name} version {version} (models:/{name}@{alias})"
    leaderboard = ""
    if leaderboard_suite is not None:
        print(f"[4/4] leaderboard: the shipped in-context model and the champion vs CatBoost on "
              f"{', '.join(LEADERBOARD_TASKS)} (split {LEADERBOARD_SPLIT})", flush=True)
        if result.registered_version is None:
            leaderboard = "leaderboard: skipped (no registered champion to score)"
        else:
            leaderboard = champion_leaderboard(config, leaderboard_suite, f"models:/{name}@{alias}", tracking_uri)
    return DemoSummary(
        leaderboard_summary=leaderboard,
        corpus_summary=report.summary(),
        pretrain_summary=result.summary(),
        promotion_summary=promotion,
        champion=champion,
        tracking_uri=tracking_uri,
        ui_command=ui_command(tracking_uri),
        wall_seconds=time.monotonic() - started,
    )


def champion_leaderboard(config: RunConfig, suite: str | Path, champion_uri: str, tracking_uri: str) -> str:
    """Score the shipped in-context checkpoint (no gradient step), the champion fine-tuned and CatBoost on the demo's
    tables; log them to MLflow (experiment `basisfm-demo-leaderboard`) and return the screen's text: per-task R2 and
    the median."""
    from basisfm.evaluation import run_suite
    from basisfm.evaluation.protocol import BASIS_STRATEGIES

    result = run_suite(suite, models=list(LEADERBOARD_MODELS), tasks=list(LEADERBOARD_TASKS), splits=[LEADERBOARD_SPLIT],
                       out_dir=Path(config.corpus.out_dir).parent / "demo_leaderboard", checkpoint=champion_uri,
                       model_checkpoints=dict(LEADERBOARD_CHECKPOINTS), tracking_uri=tracking_uri,
                       experiment="basisfm-demo-leaderboard", log_to_mlflow=True, progress=True)
    board = result.leaderboard
    per_task = board.task_scores()
    models = list(per_task.columns)
    width = max(len(m) for m in models) + 2
    using = "; ".join(f"{m} from {LEADERBOARD_CHECKPOINTS.get(m, champion_uri)}" for m in models if m in BASIS_STRATEGIES)
    lines = [f"leaderboard ({board.metric}, split {LEADERBOARD_SPLIT}; {using}):",
             "  " + "task".ljust(28) + "".join(m.rjust(width) for m in models)]
    for task, row in per_task.iterrows():
        lines.append("  " + str(task).split("/")[-1].ljust(28) + "".join(_cell(row[m]).rjust(width) for m in models))
    lines.append("  " + "median".ljust(28) + "".join(_cell(per_task[m].median()).rjust(width) for m in models))
    lines.append(f"  full table: {result.paths['markdown']}" + (f"   MLflow run: {result.mlflow_run_id}" if result.mlflow_run_id else ""))
    return "\n".join(lines)


def _cell(value: float) -> str:
    return "failed" if value != value else f"{value:.3f}"
