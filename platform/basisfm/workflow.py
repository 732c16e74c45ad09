"""The end-to-end workflow `make demo` runs (jobs/configs/demo.yaml): ingest (public suite excluded) → register the
shipped in-context checkpoint → continue pretraining it on the corpus → register → promote by in-context prediction →
a small leaderboard: the champion in context against CatBoost on three public-suite tables."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from basisfm.config import RunConfig

# The demo's last screen: the champion in context (no gradient step) beside CatBoost, on three small public-suite
# tables and one split: a minute on 2 cores, and an honest picture of the model the demo made (or kept).
LEADERBOARD_TASKS = ("Boston", "concrete", "Carseats")
LEADERBOARD_MODELS = ("basis-inference", "catboost")
LEADERBOARD_SPLIT = 0
SHIPPED_EXPERIMENT = "basisfm-shipped"  # where a shipped checkpoint's registration run goes


@dataclass
class DemoSummary:
    corpus_summary: str
    registry_summary: str
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
            self.registry_summary,
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
    screen that holds them, printed by `jobs.demo`. An in-context run (the demo's config) first registers the
    shipped checkpoint it starts from, which becomes @champion when there is none, so the candidate must beat it.
    With `leaderboard_suite` (a suite file), a last stage scores the champion in context against CatBoost on
    `LEADERBOARD_TASKS` and logs the leaderboard to MLflow.
    """
    from basisfm.corpus.ingest import ingest
    from basisfm.errors import BasisError
    from basisfm.tracking import resolve_tracking_uri, ui_command
    from basisfm.evaluation.promotion import promote_registered
    from basisfm.train import pretrain

    started = time.monotonic()
    stages = 5 if leaderboard_suite is not None else 4
    print(f"[1/{stages}] ingest: building the corpus (public suite and its near-duplicates excluded)", flush=True)
    report = ingest(config.corpus)
    if report.tables == 0:
        raise BasisError(f"ingest into {config.corpus.out_dir} produced no tables; see its ingest_report.json")

    tracking_uri = resolve_tracking_uri(config.tracking)
    name, alias = config.tracking.registered_model, config.tracking.champion_alias
    print(f"[2/{stages}] registry: the checkpoint this run starts from, as a version of {name!r}", flush=True)
    registry = register_starting_point(config, tracking_uri)

    workers = "1 local process" if config.train.launcher == "local" else f"{config.train.num_workers} Ray workers"
    start = f"from {config.train.init_from!r}" if config.train.init_from else f"model preset {config.model.preset!r}"
    print(f"[3/{stages}] pretrain: {workers}, ZeRO-{config.train.zero_stage}, {config.train.steps} steps"
          + (f" or {config.train.max_minutes:g} minutes" if config.train.max_minutes else "") + f", {start}", flush=True)
    result = pretrain(config)

    print(f"[4/{stages}] promote: candidate vs current champion on the validation tables", flush=True)
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
        print(f"[5/5] leaderboard: the champion in context vs CatBoost on {', '.join(LEADERBOARD_TASKS)} "
              f"(split {LEADERBOARD_SPLIT})", flush=True)
        if result.registered_version is None:
            leaderboard = "leaderboard: skipped (no registered champion to score)"
        else:
            leaderboard = champion_leaderboard(config, leaderboard_suite, f"models:/{name}@{alias}", tracking_uri)
    return DemoSummary(
        leaderboard_summary=leaderboard,
        corpus_summary=report.summary(),
        registry_summary=registry,
        pretrain_summary=result.summary(),
        promotion_summary=promotion,
        champion=champion,
        tracking_uri=tracking_uri,
        ui_command=ui_command(tracking_uri),
        wall_seconds=time.monotonic() - started,
    )


def register_starting_point(config: RunConfig, tracking_uri: str) -> str:
    """Register the checkpoint `train.init_from` names (once: a rerun finds it by its weights' digest) and make it
    @champion when the registered model has none, so a continued run is promoted only if it beats where it
    started. A run from scratch has no starting point to register. Returns the registry's line for the summary."""
    from basisfm.pretrained.checkpoints import resolve_checkpoint
    from basisfm.tracking.registry import champion_version, register_checkpoint_once
    from basisfm.tracking.mlflow_logger import make_client

    name, alias = config.tracking.registered_model, config.tracking.champion_alias
    if config.train.init_from is None:
        return f"registry: the run starts from scratch; its version competes with {name}@{alias} as it stands"
    if not config.tracking.register:
        return "registry: tracking.register is off; nothing registered"
    source = config.train.init_from
    directory = resolve_checkpoint(source, tracking_uri=tracking_uri)
    version, registered_now = register_checkpoint_once(directory, name, tracking_uri=tracking_uri,
                                                        experiment=SHIPPED_EXPERIMENT,
                                                        tags={"basisfm.source": str(source)})
    line = f"registry: {source!r} is {name} version {version}" + (" (registered now)" if registered_now else "")
    holder = champion_version(name, alias, tracking_uri)
    if holder is None:
        make_client(tracking_uri).set_registered_model_alias(name, alias, version)
        return line + f"; it is @{alias} (there was none)"
    return line + f"; @{alias} is version {holder}"


def champion_leaderboard(config: RunConfig, suite: str | Path, champion_uri: str, tracking_uri: str) -> str:
    """Score the champion in context (no gradient step) and CatBoost on the demo's tables; log them to MLflow
    (experiment `basisfm-demo-leaderboard`) and return the screen's text: per-task R2 and the median."""
    from basisfm.evaluation import run_suite
    from basisfm.evaluation.protocol import BASIS_STRATEGIES

    result = run_suite(suite, models=list(LEADERBOARD_MODELS), tasks=list(LEADERBOARD_TASKS), splits=[LEADERBOARD_SPLIT],
                       out_dir=Path(config.corpus.out_dir).parent / "demo_leaderboard", checkpoint=champion_uri,
                       tracking_uri=tracking_uri,
                       experiment="basisfm-demo-leaderboard", log_to_mlflow=True, progress=True)
    board = result.leaderboard
    per_task = board.task_scores()
    models = list(per_task.columns)
    width = max(len(m) for m in models) + 2
    using = "; ".join(f"{m} from {champion_uri}" for m in models if m in BASIS_STRATEGIES)
    lines = [f"leaderboard ({board.metric}, split {LEADERBOARD_SPLIT}; {using}):",
             "  " + "task".ljust(28) + "".join(m.rjust(width) for m in models)]
    for task, row in per_task.iterrows():
        lines.append("  " + str(task).split("/")[-1].ljust(28) + "".join(_cell(row[m]).rjust(width) for m in models))
    lines.append("  " + "median".ljust(28) + "".join(_cell(per_task[m].median()).rjust(width) for m in models))
    lines.append(f"  full table: {result.paths['markdown']}" + (f"   MLflow run: {result.mlflow_run_id}" if result.mlflow_run_id else ""))
    return "\n".join(lines)


def _cell(value: float) -> str:
    return "failed" if value != value else f"{value:.3f}"
