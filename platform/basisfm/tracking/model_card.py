"""The model card of a registered version: its MLflow description, written from what the run and checkpoint know.

One function builds the text (`build_model_card`, pure: params, tags and metrics in, markdown out); one writes
it to the registry (`write_model_card`), at registration and again after promotion scores the version. The
MLflow UI shows the description as markdown on the version's page.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping

from basisfm.tracking.mlflow_logger import CORPUS_TAG, HARDWARE_TAG

COMMAND_TAG = "basisfm.command"  # version tag: the command line that registered it
PARAMETERS_TAG = "basisfm.parameters"  # version tag: the checkpoint's parameter count
ARCHITECTURE_TAG = "basisfm.architecture"  # version tag: the checkpoint's model_config, as JSON
WALL_TAG = "basisfm.wall_s"  # run tag pretraining sets: seconds of training
PROMOTION_PREFIX = "val."  # version tags `promote` writes: the scores promotion compared
_ARCHITECTURE_KEYS = ("architecture", "preset", "d_model", "n_layers", "n_heads", "numeric_encoding", "regression_head",
                      "attention")
_MAX_METRICS = 12
_COUNT_SUFFIXES = ("_batches", "_cells", "_targets")  # how much was validated, not how well: not on the card


def command_line() -> str:
    """This process's command line as typed (`python -m jobs.pretrain --config ...`), for the card's provenance."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if argv and Path(argv[0]).name.startswith("python"):
        argv[0] = "python"
    return shlex.join(argv)


def checkpoint_summary(checkpoint_dir: str | Path) -> dict[str, str]:
    """Version tags describing a consolidated checkpoint: its parameter count and model config (from config.json)."""
    config_path = Path(checkpoint_dir) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return {}
    tags = {ARCHITECTURE_TAG: json.dumps(config.get("model_config", {}), sort_keys=True)}
    if isinstance(config.get("parameter_count"), int):
        tags[PARAMETERS_TAG] = str(config["parameter_count"])
    return tags


def build_model_card(*, name: str, version: str, run_id: str | None, params: Mapping[str, str],
                     run_tags: Mapping[str, str], metrics: Mapping[str, float],
                     version_tags: Mapping[str, str]) -> str:
    """The card as markdown: architecture and parameters, data, compute, validation metrics, suite scores, command.

    `params` are the run's logged (flattened) config; `run_tags` and `metrics` the run's; `version_tags` the
    registered version's (its checkpoint summary, command and promotion scores). What is unknown says so.
    """
    model_config: dict[str, Any] = {}
    try:
        model_config = json.loads(version_tags.get(ARCHITECTURE_TAG, "{}"))
    except ValueError:
        pass

    def conf(key: str) -> Any:  # the checkpoint's own config first, then the run's
        return model_config.get(key, params.get(f"model.{key}", "unknown"))

    parameters = version_tags.get(PARAMETERS_TAG)
    parameters_text = f"{int(parameters):,} parameters" if parameters and parameters.isdigit() else "parameters unknown"
    lines = [f"# {name} v{version}: {conf('architecture')} ({conf('preset')} preset), {parameters_text}", ""]

    lines += ["## Architecture", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {conf(k)} |" for k in _ARCHITECTURE_KEYS if conf(k) != "unknown"]

    task = params.get("data.task", "unknown")
    lines += ["", "## Data", "",
              f"- corpus: {params.get('corpus.source', 'unknown')} at `{params.get('corpus.out_dir', 'unknown')}`",
              f"- corpus fingerprint (tables, content hash): {run_tags.get(CORPUS_TAG, 'not recorded')}",
              f"- excluded suites (never trained on): {params.get('corpus.exclude_suites', 'not recorded')}",
              f"- training task: {task}"]

    wall = run_tags.get(WALL_TAG)
    launcher = params.get("train.launcher", "unknown")
    workers = "1" if launcher == "local" else params.get("train.num_workers", "unknown")  # local: one process
    lines += ["", "## Compute", "",
              f"- hardware: {run_tags.get(HARDWARE_TAG, 'not recorded')}",
              f"- wall time: {_minutes(wall)}",
              f"- steps: {params.get('train.steps', 'unknown')}; launcher: {launcher}; "
              f"workers: {workers}; ZeRO stage: {params.get('train.zero_stage', 'unknown')}"]

    validation = {k: v for k, v in sorted(metrics.items())
                  if k.startswith("val_") and not k.endswith(_COUNT_SUFFIXES)}
    lines += ["", "## Validation metrics (held-out corpus tables, last evaluation)", ""]
    if validation:
        lines += ["| metric | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.4g} |" for k, v in list(validation.items())[:_MAX_METRICS]]
    else:
        lines.append("none logged")

    suite = {k[len(PROMOTION_PREFIX):]: v for k, v in sorted(version_tags.items())
             if k.startswith(PROMOTION_PREFIX) and not k.endswith(_COUNT_SUFFIXES)}
    suite.update({k: f"{v:.4g}" for k, v in sorted(metrics.items()) if k.startswith("suite")})
    lines += ["", "## Suite scores (promotion's validation suite, and suite metrics the run logged)", ""]
    if suite:
        lines += ["| score | value |", "| --- | ---: |"] + [f"| {k} | {v} |" for k, v in suite.items()]
    else:
        lines.append(f"not measured yet: `python -m jobs.promote --version {version}` scores it against the champion; "
                     f"`python -m jobs.evaluate --checkpoint models:/{name}/{version}` on the public suite")

    lines += ["", "## Made by", "", f"`{version_tags.get(COMMAND_TAG, 'not recorded')}`"]
    if run_id:
        lines.append(f"(MLflow run `{run_id}`, {run_tags.get('mlflow.runName', 'unnamed')})")
    return "\n".join(lines) + "\n"


def write_model_card(client, name: str, version: str) -> str:
    """Build the card of `name` version `version` from its run and tags, and set it as the version's description."""
    from mlflow.exceptions import MlflowException

    model_version = client.get_model_version(name, str(version))
    params: Mapping[str, str] = {}
    run_tags: Mapping[str, str] = {}
    metrics: Mapping[str, float] = {}
    if model_version.run_id:
        try:
            run = client.get_run(model_version.run_id)
            params, run_tags, metrics = run.data.params, run.data.tags, run.data.metrics
        except MlflowException:
            pass  # a version whose run was deleted still gets a card from its own tags
    card = build_model_card(name=name, version=str(version), run_id=model_version.run_id, params=params,
                            run_tags=run_tags, metrics=metrics, version_tags=model_version.tags or {})
    client.update_model_version(name, str(version), description=card)
    return card


def _minutes(wall_s: str | None) -> str:
    try:
        return f"{float(wall_s) / 60:.1f} minutes" if wall_s is not None else "not recorded"
    except ValueError:
        return "not recorded"
