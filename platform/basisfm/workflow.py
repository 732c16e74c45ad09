"""The end-to-end workflow `make demo` runs: ingest (public suite excluded) → pretrain → register → promote."""

from __future__ import annotations

import time
from dataclasses import dataclass

from basisfm.config import RunConfig


@dataclass
class DemoSummary:
    corpus_summary: str
    pretrain_summary: str
    promotion_summary: str
    champion: str
    tracking_uri: str
    ui_command: str
    wall_seconds: float

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
            f"champion:      {self.champion}",
            f"MLflow store:  {self.tracking_uri}",
            f"open the UI:   {self.ui_command}",
            rule,
        ])


def run_demo(config: RunConfig) -> DemoSummary:
    """Run the three stages in order and return their results for the job to print.

    Each stage shows its own progress; no summary is printed here: `DemoSummary.render()` is the one
    screen that holds them, printed by `jobs.demo`.
    """
    from basisfm.corpus.ingest import ingest
    from basisfm.errors import BasisError
    from basisfm.tracking import resolve_tracking_uri, ui_command
    from basisfm.train import pretrain, promote_registered

    started = time.monotonic()
    print("[1/3] ingest: building the corpus (public suite and its near-duplicates excluded)", flush=True)
    report = ingest(config.corpus)
    if report.tables == 0:
        raise BasisError(f"ingest into {config.corpus.out_dir} produced no tables; see its ingest_report.json")

    print(f"[2/3] pretrain: {config.train.num_workers} Ray workers, ZeRO-{config.train.zero_stage}, "
          f"{config.train.steps} steps, model preset {config.model.preset!r}", flush=True)
    result = pretrain(config)

    print("[3/3] promote: candidate vs current champion on the validation tables", flush=True)
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
    return DemoSummary(
        corpus_summary=report.summary(),
        pretrain_summary=result.summary(),
        promotion_summary=promotion,
        champion=champion,
        tracking_uri=tracking_uri,
        ui_command=ui_command(tracking_uri),
        wall_seconds=time.monotonic() - started,
    )
