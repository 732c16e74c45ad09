"""Ship a pretrained checkpoint with the package: copy it under `basisfm/pretrained/<name>/` with its provenance.

    python -m jobs.ship_checkpoint --checkpoint models:/basisfm@champion \
        --evidence benchmarks/results/evaluate_public_champion_ft.md --claim "what the evidence shows, in one line"

The provenance records what a user needs to trust and to remake the checkpoint: the training config (the
MLflow run's parameters), the corpus it saw (table count and fingerprint), steps, wall time and hardware,
the MLflow run and registered version, the parameter count, and the evidence that it beats fine-tuning
from scratch (a results file, its SHA-256, and the claim in one line). The weights are loaded once before
they are copied (a checkpoint that does not load is never shipped) and the whole directory must stay
under `MAX_SHIPPED_BYTES`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basisfm.corpus.manifest import corpus_fingerprint
from basisfm.errors import CheckpointError, ConfigError
from basisfm.pretrained import PER_ROW_CHECKPOINT_DIR, MAX_SHIPPED_BYTES, PROVENANCE_NAME
from basisfm.tracking.mlflow_logger import CORPUS_TAG, HARDWARE_TAG

@dataclass
class _RunInfo:
    run_id: str | None = None
    registered: str | None = None  # "name version N"
    tracking_uri: str | None = None
    params: dict[str, str] | None = None
    tags: dict[str, str] | None = None
    metrics: dict[str, float] | None = None


# Lines `benchmarks.index` reads from a results page (`Status: current`, `Status: superseded by ...`, `Headline:
# ...`): annotations that change when a later page supersedes it, not part of the measurement a checkpoint shipped on.
_INDEX_ANNOTATIONS = (b"Status: ", b"Headline: ")


def evidence_digest(page: Path) -> str:
    """sha256 of a results page as evidence: its bytes without the index's annotation lines (and the blank line
    after each), so marking the page superseded later leaves a shipped checkpoint's provenance valid while any
    edit to what it measured does not."""
    kept, after_annotation = [], False
    for line in Path(page).read_bytes().split(b"\n"):
        if line.startswith(_INDEX_ANNOTATIONS):
            after_annotation = True
            continue
        if after_annotation and line == b"":
            after_annotation = False
            continue
        after_annotation = False
        kept.append(line)
    return hashlib.sha256(b"\n".join(kept)).hexdigest()


def _registry_run(checkpoint: str, tracking_uri: str) -> _RunInfo:
    from mlflow.tracking import MlflowClient

    from basisfm.pretrained.checkpoints import fail_fast_http, registered_version

    with fail_fast_http():
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = registered_version(client, checkpoint)
        name = version.name
        run = client.get_run(version.run_id) if version.run_id else None
    if run is None:
        return _RunInfo(registered=f"{name} version {version.version}", tracking_uri=tracking_uri)
    # The config.yaml artifact is what the run finished with; its parameters are what it started with (a run
    # resumed with other overrides, e.g. --set train.launcher=local after Ray failed, keeps its first ones).
    params = _final_config(client, run.info.run_id) or dict(run.data.params)
    return _RunInfo(run_id=run.info.run_id, registered=f"{name} version {version.version}", tracking_uri=tracking_uri,
                    params=params, tags={k: v for k, v in run.data.tags.items() if k.startswith("basisfm.")},
                    metrics=dict(run.data.metrics))


def _final_config(client, run_id: str) -> dict[str, str] | None:
    """The run's config.yaml artifact as {"section.key": value as text}, or None when it has none."""
    import yaml

    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", tmp)).read_text())
    except Exception:  # noqa: BLE001 - no artifact (or an unreadable one): fall back to the logged parameters
        return None
    if not isinstance(raw, dict):
        return None
    return {f"{section}.{key}": str(value) for section, values in raw.items() if isinstance(values, dict)
            for key, value in values.items()}


def _nested(params: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in sorted(params.items()):
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def ship_checkpoint(checkpoint: str, evidence: str | Path, claim: str, out_dir: str | Path = PER_ROW_CHECKPOINT_DIR,
                    tracking_uri: str | None = None, hardware: str | None = None) -> dict[str, Any]:
    """Copy `checkpoint` (a directory or models:/name@alias) to `out_dir` with provenance.json; returns the
    provenance. The previous contents of `out_dir` are replaced only once the new ones are complete."""
    from basisfm.config import TrackingConfig
    from basisfm.pretrained.checkpoints import is_registry_uri, resolve_checkpoint
    from basisfm.model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_pretrained
    from basisfm.tracking.mlflow_logger import resolve_tracking_uri

    evidence = Path(evidence)
    if not evidence.is_file():
        raise ConfigError(f"--evidence {str(evidence)!r} is not a file: ship a checkpoint only with the results that "
                          "show it beats fine-tuning from scratch (e.g. benchmarks/results/evaluate_public_champion_ft.md)")
    if not claim.strip():
        raise ConfigError("--claim is empty: say in one line what the evidence shows")
    uri = tracking_uri or resolve_tracking_uri(TrackingConfig())
    source = resolve_checkpoint(checkpoint, tracking_uri=uri)
    if source is None:
        raise ConfigError("--checkpoint is empty: name a directory or a models:/name@alias URI")
    model = load_pretrained(source)  # refuses anything that does not load as safetensors + config
    run = _registry_run(str(checkpoint), uri) if is_registry_uri(checkpoint) else _RunInfo()
    params, tags = run.params or {}, run.tags or {}
    # A directory (not a registered version) carries its own provenance.json: jobs.pretrain writes one beside the
    # model, as the benchmark loop it replaced did.
    made = {} if run.run_id else _own_provenance(source)
    if made.get("mlflow_run_id"):  # a jobs.pretrain directory names its own run (and the registry it logged to)
        run = _RunInfo(run_id=made["mlflow_run_id"], registered=made.get("mlflow_registered"),
                       tracking_uri=made.get("mlflow_tracking_uri"))

    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ship-", dir=Path(out_dir).parent))  # beside out_dir: the rename is atomic
    try:
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            shutil.copyfile(source / name, staging / name)
        provenance = {
            "name": Path(out_dir).name,
            "source": str(checkpoint),
            "shipped_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "architecture": model.config.architecture,
            "parameters": sum(p.numel() for p in model.parameters()),
            "mlflow": {"run_id": run.run_id, "registered": run.registered, "tracking_uri": run.tracking_uri},
            "training": {
                "steps": int(params["train.steps"]) if "train.steps" in params else made.get("steps"),
                "task": params.get("data.task") or made.get("task"),
                "wall_s": float(tags["basisfm.wall_s"]) if "basisfm.wall_s" in tags else made.get("wall_s"),
                "hardware": hardware or tags.get(HARDWARE_TAG) or made.get("hardware") or "not recorded by the run",
                "launcher": _launcher(params),
                "final_metrics": {k: run.metrics[k] for k in sorted(run.metrics or {}) if k.startswith("val_")} or None,
                **({"tasks_seen": made["tasks_seen"]} if "tasks_seen" in made else {}),
            },
            "corpus": ({"fingerprint": None, "source": made["corpus"], "excluded_suites": None} if "corpus" in made else
                       {"fingerprint": tags.get(CORPUS_TAG) or _corpus_of(params.get("corpus.out_dir")),
                        "source": params.get("corpus.source"), "excluded_suites": params.get("corpus.exclude_suites")}),
            "config": _nested(params) if params else json.loads((source / CONFIG_NAME).read_text()),
            **({"pretraining": made["record"]} if "record" in made else {}),
            "evidence": {"file": evidence.as_posix(), "sha256": evidence_digest(evidence),
                         "claim": claim.strip()},
        }
        (staging / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
        size = _size(staging)
        if size > MAX_SHIPPED_BYTES:
            raise CheckpointError(f"checkpoint {checkpoint!r} is {size / 2**20:.1f} MiB with its provenance; a shipped "
                                  f"checkpoint must stay under {MAX_SHIPPED_BYTES / 2**20:.0f} MiB (train a smaller preset)")
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the package data from other users
        out = Path(out_dir)
        old = out.with_name(f".{out.name}.replaced")
        if out.exists():  # moved aside, not deleted, until the new directory is in place
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return provenance


def _own_provenance(source: Path) -> dict[str, Any]:
    """What a checkpoint directory's own provenance.json (written by `jobs.pretrain`, or the benchmark loop before it) says of how
    it was made, summed over its stages (each stage records the one it started from); {} when it has none."""
    path = source / PROVENANCE_NAME
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc}); fix or remove it before shipping") from None
    stages, stage = [], record
    while isinstance(stage, dict) and stage:
        stages.append(stage)
        stage = stage.get("init_provenance")
    devices = sorted({str(s.get("device")) for s in stages if s.get("device")})
    mlflow = record.get("mlflow") if isinstance(record.get("mlflow"), dict) else {}
    prior_only = all("prior_config" in s for s in stages)
    return {
        "steps": sum(int(s.get("steps", 0)) for s in stages),
        "tasks_seen": sum(int(s.get("tasks_seen", 0)) for s in stages),
        "wall_s": round(60 * sum(float(s.get("minutes", 0.0)) for s in stages), 1),
        "hardware": "; ".join(devices) or None,
        "task": f"{record.get('what', 'pretrained outside jobs.pretrain')} ({len(stages)} stage(s))",
        **({"corpus": "the synthetic prior only (basisfm.priors): no real table"} if prior_only else {}),
        **({"mlflow_run_id": mlflow["run_id"], "mlflow_tracking_uri": mlflow.get("tracking_uri"),
            "mlflow_registered": mlflow.get("registered")} if mlflow.get("run_id") else {}),
        "record": record,
    }


def _launcher(params: dict[str, str]) -> str | None:
    if not params:
        return None
    launcher = params.get("train.launcher")
    workers = "1 process" if launcher == "local" else f"{params.get('train.num_workers')} worker(s)"
    return f"{launcher}, {workers}, ZeRO-{params.get('train.zero_stage')}"


def _corpus_of(corpus_dir: str | None) -> str | None:
    """The fingerprint of the run's corpus when it is still on this machine (older runs did not tag it)."""
    if not corpus_dir:
        return None
    try:
        return corpus_fingerprint(corpus_dir) + " (computed at shipping from the run's corpus.out_dir)"
    except (OSError, ValueError):
        return None
