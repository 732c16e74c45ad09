"""In-context pretraining on the synthetic prior alone: does the model learn to read a table's labelled rows?

Trains an in-context architecture (`tab2d` or `basis_icl`) on prior episodes (`basisfm.priors`) in one process
with plain torch (AdamW, warm-up + cosine, bf16 autocast on CUDA), and every `--eval-every` steps scores 64
held-out prior tasks: the model's squared error on the query targets, in target standard deviations, over
that of the context-mean predictor (the best predictor that reads only the context's targets), median over tasks.
The model uses the features when this ratio falls below 1; ridge and 5-nearest-neighbours ratios on the same tasks are
printed beside it (what reading the features can reach). Categorical targets report accuracy.

It saves a checkpoint the estimators load (`model.safetensors` + `config.json` + `provenance.json`: the
config, steps, tasks seen, minutes, device, commit and last ratio):

    python -m benchmarks.icl_prior_pretrain --minutes 20                      # CPU here, or CUDA when present
    make icl-curriculum   # three stages, each --init from the last: an easy prior first (on the full prior alone
                          # a tiny model stayed at the context mean for 50 CPU-minutes; see docs/model.md)
    python -m benchmarks.icl_prior_pretrain --init platform/basisfm/pretrained/in_context --corpus runs/corpus \
        --real-fraction 0.5 --lr 4e-4 --minutes 70   # half of each step's tasks from real corpus tables
    python -m jobs.evaluate --models basis-inference --checkpoint runs/icl_prior/model
    BasisRegressor(checkpoint="runs/icl_prior/model", strategy="inference").fit(X, y).predict(X_test)

Needs torch, numpy, pyyaml, scikit-learn (the baselines) and matplotlib (the PNG); not Ray, DeepSpeed or
MLflow (results are logged there only when it is importable), so it runs as it is on a lent GPU machine
(with `--corpus` it also needs the corpus directory and the sentence model that embeds its strings).
Writes benchmarks/results/icl_prior_pretrain{,_cpu}.{md,png}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks._report import RESULTS_DIR, commit, importable, markdown_page, publish, pyplot, save_figure

NAME = "icl_prior_pretrain"
HELD_OUT_SEED = 999_983  # never a training seed: training draws from --seed
HELD_OUT_TASKS = 64


@dataclass
class Check:
    step: int
    tasks_seen: int
    minutes: float
    train_loss: float
    ratio: float  # model z-MSE / context-mean z-MSE on the held-out regression targets
    accuracy: float  # held-out categorical targets (NaN when none)
    real_ratio: float = math.nan  # the same ratio on episodes of held-out corpus tables (with --corpus)


def held_out_baselines(episodes) -> dict[str, float]:
    """Ridge and 5-NN on the held-out episodes' numeric targets, reading numeric features only (missing cells:
    the support mean): the median over tasks of (squared error / the context mean's), as `evaluate` reports."""
    from sklearn.linear_model import RidgeCV
    from sklearn.neighbors import KNeighborsRegressor

    ratios = {"ridge": [], "knn": []}
    for e in episodes:
        support = e.support.cpu().numpy()
        values = e.values.cpu().numpy().astype(np.float64)
        missing = e.missing.cpu().numpy()
        strings = e.is_string_column.cpu().numpy()
        targets = e.target_mask[0].cpu().numpy()
        features = np.flatnonzero(~targets & ~strings)
        x = np.where(missing[:, features], np.nan, values[:, features])
        fill = np.nanmean(np.where(support[:, None], x, np.nan), axis=0)
        x = np.where(np.isnan(x), np.nan_to_num(fill)[None, :], x)
        sums = {"ridge": 0.0, "knn": 0.0, "mean": 0.0}
        for t in np.flatnonzero(targets & ~strings):
            keep = ~missing[:, t]
            train, query = support & keep, ~support & keep
            if train.sum() < 3 or query.sum() < 1 or len(features) == 0:
                continue
            y = values[:, t]
            sums["mean"] += np.mean((y[query] - float(e.column_mean[t])) ** 2)
            for name, model in (("ridge", RidgeCV()), ("knn", KNeighborsRegressor(min(5, int(train.sum()))))):
                model.fit(x[train], y[train])
                sums[name] += np.mean((model.predict(x[query]) - y[query]) ** 2)
        if sums["mean"] > 0:
            for name in ratios:
                ratios[name].append(sums[name] / sums["mean"])
    return {name: float(np.median(r)) if r else math.nan for name, r in ratios.items()}


def evaluate(objective, episodes, device, autocast) -> tuple[float, float]:
    """(median over tasks of model z-MSE / context-mean z-MSE, categorical accuracy) over `episodes`."""
    import torch

    objective.eval()
    ratios, correct, counted = [], 0.0, 0
    with torch.no_grad(), autocast():
        for e in episodes:
            metrics = objective(e.to(device)).metrics
            if metrics.get("numeric_mean_z_mse", 0.0) > 0:
                ratios.append(metrics["numeric_z_mse"] / metrics["numeric_mean_z_mse"])
            if "categorical_accuracy" in metrics:
                correct += metrics["categorical_accuracy"] * metrics["categorical_targets"]
                counted += int(metrics["categorical_targets"])
    objective.train()
    return (float(np.median(ratios)) if ratios else math.nan), (correct / counted if counted else math.nan)


def parse_overrides(items: list[str], config) -> None:
    """`--prior key=value` onto the PriorConfig (its own validation names a bad key or value)."""
    import yaml

    from basisfm.errors import ConfigError

    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not hasattr(config, key):
            raise ConfigError(f"--prior {item!r}: expected KEY=VALUE with KEY a priors field")
        setattr(config, key, yaml.safe_load(raw))
    config.validate("priors")


def train(args) -> tuple[list[Check], dict, Path]:
    import contextlib

    import torch

    from basisfm.config import LossConfig, ModelConfig, PriorConfig, apply_model_preset
    from basisfm.corpus.manifest import corpus_fingerprint
    from basisfm.losses.objective import build_objective
    from basisfm.model import build_model, count_parameters
    from basisfm.model.checkpoint import load_pretrained, save_pretrained
    from basisfm.priors import PriorSampler
    from basisfm.train.deepspeed_config import warmup_cosine_factor

    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.init:
        # Continue from a checkpoint's weights (a curriculum in stages: an easy prior first, then a harder one);
        # its config decides the architecture, so --architecture / --preset / --n-bins do not apply.
        model = load_pretrained(args.init, device=device).train()
        if args.grow_layers:
            from basisfm.model.grow import grow_depth

            model = grow_depth(model, args.grow_layers)  # the same predictions, more layers to train
        model_config = model.config
        before = read_provenance(args.init)
    else:
        model_config = ModelConfig(preset=args.preset, architecture=args.architecture, regression_head="binned", n_bins=args.n_bins)
        apply_model_preset(model_config)
        model = build_model(model_config).to(device)
        before = {}
    objective = build_objective(model, model_config, LossConfig(weighting="none"))
    prior = PriorConfig(max_rows=args.max_rows, max_features=args.max_features)
    parse_overrides(args.prior, prior)
    sampler = PriorSampler(prior, seed=args.seed, text_dim=model_config.text_dim, max_cells=args.max_cells)
    held_out = PriorSampler(prior, seed=HELD_OUT_SEED, text_dim=model_config.text_dim, max_cells=args.max_cells).sample(HELD_OUT_TASKS)
    baselines = held_out_baselines(held_out)
    corpus, real_held_out = None, []
    if args.corpus:
        corpus = corpus_tasks(args)
        real_held_out = corpus.held_out(HELD_OUT_TASKS, seed=HELD_OUT_SEED)
        baselines.update({f"real_{k}": v for k, v in held_out_baselines(real_held_out).items()})
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(objective.parameters(), lr=args.lr, weight_decay=0.01, fused=fused)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine_factor(s, args.warmup, args.steps, 0.1))

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    checks: list[Check] = []
    if args.init:  # where a stage starts: the checkpoint's own scores on the held-out tasks, before any step
        ratio, accuracy = evaluate(objective, held_out, device, autocast)
        real_ratio = evaluate(objective, real_held_out, device, autocast)[0] if real_held_out else math.nan
        checks.append(Check(0, 0, 0.0, math.nan, ratio, accuracy, real_ratio))
    started, tasks, losses = time.perf_counter(), 0, []
    deadline = started + 60 * args.minutes if args.minutes else math.inf
    step = 0
    while step < args.steps:
        sampler.set_step(step)  # the prior's row / feature curriculum (--prior curriculum=linear)
        n_real = int(np.random.default_rng([args.seed, step]).binomial(args.batch_tasks, args.real_fraction)) if corpus else 0
        episodes = sampler.sample(args.batch_tasks - n_real) + (corpus.sample(n_real) if n_real else [])
        with autocast():
            loss = torch.stack([objective(e.to(device)).loss for e in episodes]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        tasks += len(episodes)
        losses.append(loss.detach())
        out_of_time = time.perf_counter() >= deadline
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            ratio, accuracy = evaluate(objective, held_out, device, autocast)
            real_ratio = evaluate(objective, real_held_out, device, autocast)[0] if real_held_out else math.nan
            checks.append(Check(step, tasks, (time.perf_counter() - started) / 60, float(torch.stack(losses).mean()), ratio, accuracy, real_ratio))
            losses = []
            print(f"step {step:>6}  tasks {tasks:>8}  {checks[-1].minutes:6.1f} min  train loss {checks[-1].train_loss:.3f}  "
                  f"held-out MSE / context-mean MSE {ratio:.3f} (ridge {baselines['ridge']:.3f}, 5-NN {baselines['knn']:.3f})  "
                  f"accuracy {accuracy:.3f}" + (f"  held-out corpus tables {real_ratio:.3f} (ridge {baselines['real_ridge']:.3f}, "
                                                f"5-NN {baselines['real_knn']:.3f})" if real_held_out else ""), flush=True)
        if out_of_time:
            break

    out = Path(args.out)
    save_pretrained(model, out)
    provenance = {
        "what": "in-context model pretrained on the synthetic prior alone (benchmarks.icl_prior_pretrain)",
        "model_config": asdict(model_config), "prior_config": asdict(prior), "seed": args.seed,
        "steps": step, "tasks_seen": tasks, "tasks_per_step": args.batch_tasks, "lr": args.lr,
        "minutes": round((time.perf_counter() - started) / 60, 2), "device": device_name(device), "device_type": device.type,
        # a staged run: what the --init checkpoint had already seen (its own provenance), and the totals
        "init": str(args.init) if args.init else None, "init_provenance": before or None, "grown_to_layers": args.grow_layers,
        "total_tasks_seen": tasks + int(before.get("total_tasks_seen", before.get("tasks_seen", 0))),
        "total_minutes": round((time.perf_counter() - started) / 60 + float(before.get("total_minutes", before.get("minutes", 0.0))), 2),
        "parameters": count_parameters(model), "commit": commit(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "held_out_ratio": checks[-1].ratio if checks else None, "baselines": baselines,
        "corpus": ({"dir": args.corpus, "fingerprint": corpus_fingerprint(args.corpus), "real_fraction": args.real_fraction,
                    "training_tables": len(corpus.train_records), "held_out_tables": len(corpus.held_out_records),
                    "held_out_ratio": checks[-1].real_ratio if checks else None} if corpus else None),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    return checks, provenance, out


def corpus_tasks(args):
    """Real-table episodes (`basisfm.data.reading.corpus_tasks`) from `--corpus`, embedded as the checkpoint's text is."""
    from basisfm.config import DataConfig
    from basisfm.encoding.text import shared_embedder
    from basisfm.data.reading.corpus_tasks import CorpusTaskSettings, CorpusTasks
    from basisfm.model.checkpoint import read_text_top_k

    text_top_k = read_text_top_k(args.init) if args.init else DataConfig.text_top_k
    settings = CorpusTaskSettings(max_rows=args.max_rows, max_columns=args.corpus_max_columns, max_cells=args.max_cells)
    return CorpusTasks(args.corpus, shared_embedder(args.embedding_cache_dir, text_top_k), settings, seed=args.seed)


def read_provenance(directory) -> dict:
    """The provenance.json this benchmark wrote beside a checkpoint ({} when there is none: any checkpoint can seed a run).
    A shipped checkpoint (`jobs.ship_checkpoint`) keeps this benchmark's provenance under "pretraining"."""
    path = Path(directory) / "provenance.json"
    provenance = json.loads(path.read_text()) if path.is_file() else {}
    return provenance.get("pretraining") or provenance


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def render_markdown(checks: list[Check], provenance: dict, command: str, checkpoint: Path) -> str:
    corpus = provenance.get("corpus")
    lines = [f"# In-context pretraining on the prior: {provenance['model_config']['architecture']}, "
             f"{provenance['model_config']['preset']} preset", "",
             "Held-out ratio: the model's squared error on a held-out prior task's numeric query targets over that of "
             "the context-mean predictor, median over 64 tasks (below 1: it reads the features). Ridge and 5-NN on the same tasks: "
             f"{provenance['baselines']['ridge']:.3f} and {provenance['baselines']['knn']:.3f}.", ""]
    header, rule = "| step | tasks seen | minutes | train loss | held-out ratio | categorical accuracy |", "| ---: " * 6 + "|"
    if corpus:
        lines += [f"With real tables: {corpus['real_fraction']:.0%} of each step's tasks are episodes of "
                  f"{corpus['training_tables']:,} corpus tables ({corpus['dir']}: {corpus['fingerprint'][:40]}), "
                  "read as the in-context estimators read a table; the last column is the same ratio on 64 episodes of "
                  f"{corpus['held_out_tables']} held-out corpus tables (ridge {provenance['baselines']['real_ridge']:.3f}, "
                  f"5-NN {provenance['baselines']['real_knn']:.3f}).", ""]
        header, rule = header + " held-out corpus tables |", rule + " ---: |"
    lines += [header, rule]
    lines += [f"| {c.step} | {c.tasks_seen:,} | {c.minutes:.1f} | {c.train_loss:.3f} | {c.ratio:.3f} | {c.accuracy:.3f} |"
              + (f" {c.real_ratio:.3f} |" if corpus else "") for c in checks]
    return markdown_page(lines + [""], {
        "device": provenance["device"], "parameters": f"{provenance['parameters']:,}",
        "date": provenance["date"], "commit": provenance["commit"], "checkpoint": str(checkpoint),
        "started from": (provenance["init"] or "random weights")
        + (f", grown to {provenance['grown_to_layers']} layers (basisfm.model.grow)" if provenance.get("grown_to_layers") else ""),
        "in all (with earlier stages)": f"{provenance['total_tasks_seen']:,} tasks, {provenance['total_minutes']:.1f} minutes",
        "command": command,
    })


def render_png(checks: list[Check], provenance: dict, path: Path) -> Path | None:
    try:
        plt = pyplot()
    except ImportError:  # a lent GPU machine may lack matplotlib: the markdown still holds every number
        return None
    if not checks:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([c.tasks_seen for c in checks], [c.ratio for c in checks], marker="o", label="model")
    if provenance.get("corpus"):
        ax.plot([c.tasks_seen for c in checks], [c.real_ratio for c in checks], marker="s", label="model, held-out corpus tables")
    for name, style in (("ridge", "--"), ("knn", ":")):
        ax.axhline(provenance["baselines"][name], linestyle=style, color="grey", label=name)
    ax.axhline(1.0, color="black", linewidth=0.8, label="context mean")
    ax.set_xlabel("prior tasks seen")
    ax.set_ylabel("held-out MSE / context-mean MSE")
    ax.set_title(f"{provenance['model_config']['architecture']} on the prior ({provenance['device']})", fontsize=9)
    ax.legend()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from basisfm.config import DataConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--architecture", default="tab2d", choices=["tab2d", "basis_icl"])
    p.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"])
    p.add_argument("--steps", type=int, default=20_000, help="optimizer steps (the cosine schedule's length)")
    p.add_argument("--minutes", type=float, default=None, help="stop (and save) after this many minutes")
    p.add_argument("--batch-tasks", type=int, default=8, help="prior tasks per optimizer step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--n-bins", type=int, default=64)
    p.add_argument("--max-rows", type=int, default=128)
    p.add_argument("--max-features", type=int, default=10)
    p.add_argument("--max-cells", type=int, default=2048, help="rows x columns cap per task")
    p.add_argument("--prior", action="append", default=[], metavar="KEY=VALUE", help="any other priors field")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default=None, metavar="DIR",
                   help="start from this checkpoint's weights (and architecture) instead of random ones: the next stage of a curriculum")
    p.add_argument("--grow-layers", type=int, default=None, metavar="N",
                   help="with --init: deepen the checkpoint to N layers, each trained layer followed by copies that start as "
                        "the identity (basisfm.model.grow), so training continues from the same predictions with more capacity")
    p.add_argument("--corpus", default=None, metavar="DIR",
                   help="also train on episodes of this ingested corpus's tables (public-suite tables are excluded at ingest), "
                        "read as the in-context estimators read a table; a held-out share of its tables is scored beside the prior")
    p.add_argument("--real-fraction", type=float, default=0.5, help="with --corpus: the share of each step's tasks from real tables")
    p.add_argument("--corpus-max-columns", type=int, default=24, help="with --corpus: target + feature columns per real episode")
    p.add_argument("--embedding-cache-dir", default=DataConfig.embedding_cache_dir,
                   help="with --corpus: where string embeddings are cached")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="runs/icl_prior/model", help="checkpoint directory")
    p.add_argument("--results", default=str(RESULTS_DIR), help="where the .md and .png go")
    p.add_argument("--label", default="", help="appended to the results' file names (one page per stage of a curriculum)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results to MLflow")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_tasks < 1 or args.eval_every < 1:
        p.error("--steps, --batch-tasks and --eval-every must be at least 1")
    if not 0.0 <= args.real_fraction <= 1.0:
        p.error("--real-fraction must be in [0, 1]")
    if args.grow_layers is not None and not args.init:
        p.error("--grow-layers deepens a trained checkpoint: give it --init DIR")

    checks, provenance, checkpoint = train(args)
    suffix = ("_cpu" if provenance["device_type"] == "cpu" else "") + (f"_{args.label}" if args.label else "")
    command = "python -m benchmarks.icl_prior_pretrain " + " ".join(argv if argv is not None else sys.argv[1:])
    last = checks[-1] if checks else None
    publish(NAME + suffix, render_markdown(checks, provenance, command, checkpoint),
            lambda path: render_png(checks, provenance, path),
            params={k: provenance[k] for k in ("steps", "tasks_seen", "lr", "device", "commit")},
            metrics={"held_out_ratio": last.ratio, "minutes": last.minutes} if last else {},
            out_dir=args.results, log=not args.no_mlflow and importable("mlflow"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
