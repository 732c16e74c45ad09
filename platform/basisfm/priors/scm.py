"""Random structural causal models, batched over tasks: root causes, MLP graphs and tree-ensemble graphs.

Each function makes the nodes of `B` independent tasks at once (tensors `[B, N, ·]`, `N` rows), with
per-task random structure; no Python loop ever runs per row. A task's columns are later read from
random nodes of its graph (`select_nodes`), so features can be causes, parents or effects of a target.
Every node is standardised over its rows as it is made, which keeps deep graphs finite and makes a
layer's noise std a signal-to-noise ratio.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from basisfm.config import PriorConfig
from basisfm.priors.draws import Draws

# Nonlinearities a layer draws from, per task: smooth, piecewise-linear, periodic, bounded and step-like.
ACTIVATIONS = {
    "identity": lambda x: x,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda x: torch.nn.functional.leaky_relu(x, 0.1),
    "elu": torch.nn.functional.elu,
    "softplus": torch.nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "sin": torch.sin,
    "abs": torch.abs,
    "square": lambda x: x.clamp(-4, 4) ** 2,
    "step": lambda x: (x > 0).to(x.dtype),
    "gaussian": lambda x: torch.exp(-(x**2)),
}
_ACTIVATION_FNS = list(ACTIVATIONS.values())

CAUSE_DISTRIBUTIONS = ("normal", "uniform", "mixture", "laplace", "lognormal", "discrete")


def standardise_rows(x: torch.Tensor) -> torch.Tensor:
    """[B, N, K] -> each (task, node) column to mean 0, std 1 over its N rows (constant columns to 0)."""
    std, mean = torch.std_mean(x, dim=1, keepdim=True, unbiased=False)  # [B, 1, K] each
    scale = torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.zeros_like(std))
    return (x - mean).mul_(scale)


def sample_causes(draws: Draws, n_tasks: int, n_rows: int, n_causes: int) -> torch.Tensor:
    """[B, N, M] root causes, each (task, cause) from its own distribution (`CAUSE_DISTRIBUTIONS`)."""
    b, n, m = n_tasks, n_rows, n_causes
    kind = draws.tensor(draws.rng.integers(0, len(CAUSE_DISTRIBUTIONS), (b, 1, m)), torch.long)  # [B, 1, M]
    normal = draws.normal(b, n, m)
    uniform = draws.uniform(b, n, m)
    # Mixture of up to 4 Gaussian modes: each row picks a mode, modes spread apart by ~2 std.
    centres = draws.normal(b, 4, m) * 2.0  # [B, 4, M]
    n_modes = draws.tensor(draws.rng.integers(2, 5, (b, 1, m)), torch.long)
    mode = (draws.uniform(b, n, m) * n_modes).long()  # [B, N, M] in [0, n_modes)
    mixture = centres.gather(1, mode) + 0.5 * draws.normal(b, n, m)
    exponential = -torch.log(draws.uniform(b, n, m).clamp_min(1e-7))
    laplace = torch.where(draws.uniform(b, n, m) < 0.5, -exponential, exponential)
    lognormal = torch.exp(draws.tensor(draws.rng.uniform(0.3, 1.2, (b, 1, m))) * normal)
    levels = draws.tensor(draws.rng.integers(2, 8, (b, 1, m)))
    discrete = torch.floor(uniform * levels)
    choices = [normal, uniform, mixture, laplace, lognormal, discrete]
    out = choices[0]
    for k in range(1, len(choices)):
        out = torch.where(kind == k, choices[k], out)
    return standardise_rows(out)


def _activate(draws: Draws, h: torch.Tensor) -> torch.Tensor:
    """Each task's layer through its own activation (one call per task of the chunk, none per row)."""
    choice = draws.rng.integers(0, len(_ACTIVATION_FNS), h.shape[0])
    out = torch.empty_like(h)
    for b, a in enumerate(choice):
        out[b] = _ACTIVATION_FNS[a](h[b])
    return out


def _noise_std(draws: Draws, config: PriorConfig, n_tasks: int) -> torch.Tensor:
    """[B, 1, 1] per-task noise std, log-uniform in [max_noise_std / 30, max_noise_std]."""
    if config.max_noise_std == 0:
        return draws.tensor(np.zeros((n_tasks, 1, 1)))
    high = math.log(config.max_noise_std)
    return draws.tensor(np.exp(draws.rng.uniform(high - math.log(30.0), high, (n_tasks, 1, 1))))


def _layer_of_nodes(layers: list[torch.Tensor]) -> torch.Tensor:
    """[K] long: which layer each node of `torch.cat(layers, dim=2)` comes from (0 = the causes)."""
    return torch.cat([torch.full((layer.shape[2],), i, dtype=torch.long) for i, layer in enumerate(layers)])


def mlp_scm_nodes(draws: Draws, config: PriorConfig, n_tasks: int, n_rows: int, n_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes of `n_tasks` random MLP SCMs: ([B, N, K] node values, [K] long layer of each node, 0 = causes).

    Per chunk: depth L and width H (raised until L x H + causes >= n_columns + 1). Per task and layer: a
    sparse Gaussian weight matrix (edge density drawn per task), a bias, Gaussian noise and an activation.
    """
    b, n = n_tasks, n_rows
    depth = int(draws.rng.integers(config.min_layers, config.max_layers + 1))
    n_causes = int(draws.rng.integers(1, max(2, n_columns) + 1))
    width = int(draws.rng.integers(config.min_width, config.max_width + 1))
    width = max(width, math.ceil((n_columns + 1 - n_causes) / depth), 2)
    density = draws.tensor(draws.rng.uniform(config.min_edge_density, 1.0, (b, 1, 1)))  # [B, 1, 1]
    gain = draws.tensor(np.exp(draws.rng.uniform(math.log(0.5), math.log(3.0), (b, 1, 1))))
    h = sample_causes(draws, b, n, n_causes)  # [B, N, M]
    nodes = [h]
    for _ in range(depth):
        fan_in = h.shape[2]
        edges = draws.uniform(b, fan_in, width) < density  # [B, in, H]
        # Every node keeps at least one parent, so no node is pure noise by construction.
        edges.scatter_(1, draws.integers(fan_in, b, 1, width), True)
        weights = draws.normal(b, fan_in, width) * edges * gain / torch.sqrt(density * fan_in)
        bias = draws.normal(b, 1, width) * 0.5
        h = torch.bmm(h, weights) + bias + _noise_std(draws, config, b) * draws.normal(b, n, width)  # [B, N, H]
        h = standardise_rows(_activate(draws, h))
        nodes.append(h)
    values = torch.cat(nodes, dim=2)  # [B, N, K], K = M + L x H
    return values, _layer_of_nodes(nodes)


def tree_scm_nodes(draws: Draws, config: PriorConfig, n_tasks: int, n_rows: int, n_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes of `n_tasks` random tree-ensemble SCMs: each node is a sum of random oblivious trees of the
    previous layer's nodes (step functions with axis-aligned splits at values the data actually takes).

    Per chunk: 1-2 layers, H nodes a layer, E trees a node, depth D. Per task, node, tree and level: which
    parent to split on and where (a random row's value of that parent); per leaf: a Gaussian value.
    """
    b, n = n_tasks, n_rows
    depth = int(draws.rng.integers(1, 3))
    # Fewer causes and narrower layers than the MLP's: a tree node reads only a few parents, so in a wide
    # graph most columns would be unrelated to the target (measured: over half the tasks unlearnable).
    n_causes = int(draws.rng.integers(1, max(2, n_columns // 2) + 1))
    width = int(draws.rng.integers(config.min_width, max(config.min_width, min(config.max_width, n_columns)) + 1))
    width = max(width, math.ceil((n_columns + 1 - n_causes) / depth), 2)
    n_trees = int(draws.rng.integers(1, config.max_trees + 1))
    tree_depth = int(draws.rng.integers(1, config.max_tree_depth + 1))
    h = sample_causes(draws, b, n, n_causes)
    nodes = [h]
    for _ in range(depth):
        fan_in = h.shape[2]
        splits = width * n_trees * tree_depth
        parent = draws.integers(fan_in, b, splits)  # [B, S]: which input each split reads
        row = draws.integers(n, b, splits)  # [B, S]: whose value is the threshold
        threshold = h.reshape(b, n * fan_in).gather(1, row * fan_in + parent)  # [B, S]
        chosen = h.gather(2, parent.unsqueeze(1).expand(b, n, splits))  # [B, N, S]
        bits = (chosen > threshold.unsqueeze(1)).to(h.dtype).view(b, n, width * n_trees, tree_depth)
        powers = 2.0 ** torch.arange(tree_depth, device=draws.device, dtype=h.dtype)
        leaf = (bits @ powers).long()  # [B, N, H x E]: the leaf each row lands in (a matmul beats a bool sum)
        leaves = draws.normal(b, 1, width * n_trees, 2**tree_depth)  # [B, 1, H x E, 2^D]
        out = leaves.expand(b, n, -1, -1).gather(3, leaf.unsqueeze(-1)).squeeze(-1)  # [B, N, H x E]
        h = out.view(b, n, width, n_trees).sum(-1) / math.sqrt(n_trees)
        h = standardise_rows(h + _noise_std(draws, config, b) * draws.normal(b, n, width))
        nodes.append(h)
    return torch.cat(nodes, dim=2), _layer_of_nodes(nodes)


SCM_GENERATORS = {"mlp": mlp_scm_nodes, "tree": tree_scm_nodes}


def with_noise_features(draws: Draws, config: PriorConfig, features: torch.Tensor) -> torch.Tensor:
    """[B, N, F] features with a share of each task's columns, drawn per task in [0, max_noise_feature_fraction],
    replaced by standard-normal noise independent of every node: features that say nothing about the target,
    which real tables have and a model must learn to pass over. The first column always stays a real node
    (columns are shuffled later), so no task is noise alone. Draws nothing when the fraction is 0, so chunks
    of a prior without noise features are the same as before the option existed."""
    if config.max_noise_feature_fraction <= 0:
        return features
    b, n, f = features.shape
    share = draws.rng.uniform(0.0, config.max_noise_feature_fraction, (b, 1))
    noise = draws.rng.random((b, f)) < share
    noise[:, 0] = False
    return torch.where(draws.tensor(noise, torch.bool).unsqueeze(1), draws.normal(b, n, f), features)


# The curves an additive target reads a feature through (`with_additive_targets`), with their chances: mostly the
# feature itself (linear regression), else a saturating, a one-sided or a U-shaped curve (an additive model).
ADDITIVE_CURVES = {
    "identity": (0.6, lambda x: x),
    "tanh": (0.15, torch.tanh),
    "softplus": (0.15, torch.nn.functional.softplus),
    "square": (0.1, lambda x: x.clamp(-3, 3) ** 2),
}


def with_additive_targets(draws: Draws, config: PriorConfig, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, N, T] targets, where a task drawn with chance `additive_target_fraction` has each target replaced by
    an additive function of its [B, N, F] features: a share of them (drawn per task in [0.3, 1], the first
    feature always among them) each through a curve of `ADDITIVE_CURVES`, weighted by a Gaussian, summed,
    standardised, plus Gaussian noise of std log-uniform in [0.05, 1]. Draws nothing when the fraction is 0,
    so chunks of a prior without additive targets are the same as before the option existed."""
    if config.additive_target_fraction <= 0:
        return targets
    b, n, f = features.shape
    t = targets.shape[2]
    chosen = draws.tensor(draws.rng.random(b) < config.additive_target_fraction, torch.bool).view(b, 1, 1)
    share = draws.rng.uniform(0.3, 1.0, (b, 1, 1))
    relevant = draws.rng.random((b, f, t)) < share  # [B, F, T]
    relevant[:, 0, :] = True
    chances = np.array([chance for chance, _ in ADDITIVE_CURVES.values()])
    curve = draws.tensor(draws.rng.choice(len(chances), (b, 1, f), p=chances / chances.sum()), torch.long)  # [B, 1, F]
    curved = features
    for k, (_, fn) in enumerate(ADDITIVE_CURVES.values()):
        if k:  # entry 0 is the identity, already in `curved`
            curved = torch.where(curve == k, standardise_rows(fn(features)), curved)
    weights = draws.normal(b, f, t) * draws.tensor(relevant, torch.bool)  # [B, F, T]
    noise_std = draws.tensor(np.exp(draws.rng.uniform(math.log(0.05), 0.0, (b, 1, t))))
    additive = standardise_rows(torch.bmm(curved, weights)) + noise_std * draws.normal(b, n, t)  # [B, N, T]
    return torch.where(chosen, standardise_rows(additive), targets)


def select_nodes(draws: Draws, nodes: torch.Tensor, layer: torch.Tensor, n_features: int, n_targets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Read each task's columns from distinct random nodes: ([B, N, F] features, [B, N, T] targets).

    Targets: half of the tasks (drawn per task) take them from the last layer (effects of everything
    before), the others from any node, so features may be effects of a target as well as causes.
    Features: half of the tasks draw them uniformly from the other nodes; the others prefer nodes in
    layers near the first target's (its parents, children and siblings are likelier among them), as
    TabICL's "in clique" option does for contiguous blocks of nodes.
    """
    b, _, k = nodes.shape
    if n_features + n_targets > k:
        raise ValueError(f"a graph of {k} nodes cannot supply {n_features} features and {n_targets} targets")
    layer = layer.to(draws.device)
    last = (layer == layer.max()).unsqueeze(0)  # [1, K]
    effect_task = draws.tensor(draws.rng.random(b) < 0.5).bool().unsqueeze(1)  # [B, 1]
    # Last-layer nodes sort first for effect tasks (scores < 0), so the first T picks are effects.
    target_scores = draws.uniform(b, k) - 2.0 * (effect_task & last).float()
    target_idx = torch.argsort(target_scores, dim=1)[:, :n_targets]  # [B, T]
    nearby = draws.tensor(draws.rng.random((b, 1)) < 0.5)  # [B, 1]: 1.0 for tasks that prefer nearby layers
    distance = (layer.unsqueeze(0) - layer[target_idx[:, :1]]).abs().float()  # [B, K]
    feature_scores = draws.uniform(b, k) + nearby * distance
    feature_scores = feature_scores.scatter(1, target_idx, float("inf"))  # a target is never a feature
    feature_idx = torch.argsort(feature_scores, dim=1)[:, :n_features]  # [B, F]
    n = nodes.shape[1]
    targets = nodes.gather(2, target_idx.unsqueeze(1).expand(b, n, n_targets))
    features = nodes.gather(2, feature_idx.unsqueeze(1).expand(b, n, n_features))
    return features, targets
