"""Held-out in-context skill of a checkpoint: does it read a table's labelled rows, and how far from ridge and kNN?

Scores a consolidated checkpoint (a directory, a shipped name or models:/...) on the held-out prior tasks a stage
config's `val_prior_ratio` uses (`basisfm.train.prior_validation`: the same seed, prior and cell cap): the model's
squared error on the numeric query targets, in target standard deviations, over that of the context-mean predictor,
median over tasks (below 1: it uses the features), with ridge and 5-nearest-neighbours ratios on the same tasks
beside it and categorical accuracy. With `--corpus` the same on episodes of held-out corpus tables. It trains
nothing: the stages are made by `python -m jobs.pretrain --config jobs/configs/icl/stageN.yaml` (`make icl-curriculum`).

    python -m benchmarks.icl_heldout --checkpoint runs/curriculum/icl-stage1/model --config jobs/configs/icl/stage1.yaml
    python -m benchmarks.icl_heldout --checkpoint in_context --config jobs/configs/icl/stage7.yaml --label shipped

Writes benchmarks/results/icl_heldout{_label}.{md,png}; logs them to MLflow when it is importable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks._report import RESULTS_DIR, commit, importable, markdown_page, publish, pyplot, save_figure

NAME = "icl_heldout"


def held_out_baselines(episodes) -> dict[str, float]:
    """Ridge and 5-NN on the held-out episodes' numeric targets, reading numeric features only (missing cells:
    the support mean): the median over tasks of (squared error / the context mean's), as the model's ratio is."""
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


def measure(checkpoint: str, config, *, corpus: str | None = None, embedding_cache_dir: str | None = None) -> dict:
    """{"prior": {model ratio, accuracy, ridge, knn, tasks}, "real": the same on held-out corpus tables or None}."""
    import torch

    from basisfm.pretrained.checkpoints import resolve_checkpoint
    from basisfm.losses import build_objective
    from basisfm.model.checkpoint import load_pretrained, read_text_top_k
    from basisfm.train.prior_validation import HELD_OUT_SEED, held_out_prior_tasks, held_out_ratio

    directory = resolve_checkpoint(checkpoint)
    torch.manual_seed(config.train.seed)
    model = load_pretrained(directory)
    objective = build_objective(model, model.config, config.loss)
    n_tasks = config.train.prior_validation_tasks or 64
    tasks = held_out_prior_tasks(config.priors, n_tasks, text_dim=model.config.text_dim, max_cells=config.data.token_budget)
    scored = held_out_ratio(objective, tasks, prefix="")
    out = {"checkpoint": str(directory), "parameters": sum(p.numel() for p in model.parameters()),
           "architecture": model.config.architecture, "layers": model.config.n_layers,
           "prior": {**scored, **held_out_baselines(tasks), "tasks": len(tasks)}, "real": None}
    if corpus:
        from basisfm.encoding.text import shared_embedder
        from basisfm.data.reading.corpus_tasks import CorpusTaskSettings, CorpusTasks

        embedder = shared_embedder(embedding_cache_dir or config.data.embedding_cache_dir, read_text_top_k(directory))
        settings = CorpusTaskSettings(max_rows=config.priors.max_rows, max_cells=config.data.token_budget)
        real = CorpusTasks(corpus, embedder, settings, seed=config.train.seed).held_out(n_tasks, seed=HELD_OUT_SEED)
        out["real"] = {**held_out_ratio(objective, real, prefix=""), **held_out_baselines(real), "tasks": len(real)}
    return out


def render_markdown(result: dict, command: str) -> str:
    rows = [("held-out prior tasks", result["prior"])] + ([("held-out corpus tables", result["real"])] if result["real"] else [])
    lines = [f"# Held-out in-context skill: {result['architecture']}, {result['layers']} layers", "",
             "Ratio: squared error on a held-out task's numeric query targets over that of the context-mean predictor, "
             "median over tasks (below 1: the model reads the features); ridge and 5-NN read the same tasks' numeric "
             "features. The prior tasks are those the stage config's `val_prior_ratio` scores during training.", "",
             "| tasks | n | model ratio | ridge | 5-NN | categorical accuracy |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {r['tasks']} | {r['ratio']:.3f} | {r['ridge']:.3f} | {r['knn']:.3f} | {r['accuracy']:.3f} |"
              for name, r in rows]
    return markdown_page(lines + [""], {"checkpoint": result["checkpoint"], "parameters": f"{result['parameters']:,}",
                                        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                        "commit": commit(), "command": command})


def render_png(result: dict, path: Path) -> Path | None:
    try:
        plt = pyplot()
    except ImportError:  # a lent GPU machine may lack matplotlib: the markdown holds every number
        return None
    rows = [("prior", result["prior"])] + ([("corpus", result["real"])] if result["real"] else [])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.25
    for i, name in enumerate(("ratio", "ridge", "knn")):
        ax.bar(np.arange(len(rows)) + (i - 1) * width, [r[name] for _, r in rows], width,
               label="model" if name == "ratio" else name)
    ax.axhline(1.0, color="black", linewidth=0.8, label="context mean")
    ax.set_xticks(np.arange(len(rows)), [f"held-out {n} tasks" for n, _ in rows])
    ax.set_ylabel("MSE / context-mean MSE")
    ax.set_title(f"{result['architecture']}, {result['layers']} layers", fontsize=9)
    ax.legend()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    from basisfm.config import load_config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory, a shipped name ('in_context') or models:/...")
    p.add_argument("--config", required=True, help="the stage config whose prior (and held-out tasks) to score on")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--corpus", default=None, metavar="DIR", help="also score episodes of this corpus's held-out tables")
    p.add_argument("--embedding-cache-dir", default=None, help="with --corpus: where string embeddings are cached")
    p.add_argument("--results", default=str(RESULTS_DIR), help="where the .md and .png go")
    p.add_argument("--label", default="", help="appended to the results' file names")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the results to MLflow")
    args = p.parse_args(argv)
    config = load_config(args.config, args.overrides)
    result = measure(args.checkpoint, config, corpus=args.corpus, embedding_cache_dir=args.embedding_cache_dir)
    command = "python -m benchmarks.icl_heldout " + " ".join(argv if argv is not None else sys.argv[1:])
    metrics = {f"prior_{k}": v for k, v in result["prior"].items() if math.isfinite(v)}
    metrics.update({f"real_{k}": v for k, v in (result["real"] or {}).items() if math.isfinite(v)})
    publish(NAME + (f"_{args.label}" if args.label else ""), render_markdown(result, command),
            lambda path: render_png(result, path), params={"checkpoint": result["checkpoint"], "config": args.config},
            metrics=metrics, out_dir=args.results, log=not args.no_mlflow and importable("mlflow"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
