"""`python -m jobs.pretrain`: make a model (DeepSpeed), log it to MLflow and register it: the only way one is made.

Locally: `python -m jobs.pretrain --config jobs/configs/tiny.yaml` (Ray Train workers on a local Ray), or
`--launcher local` (one process, no Ray: a single-GPU machine or the CPU). On a cluster: the same module
through `ray job submit` (see the README). Rerunning with the same train.run_name resumes from its last checkpoint.
The config picks the data (corpus tables, corpus episodes, prior episodes: no corpus needed, or a mix) and the start
(from scratch, or `train.init_from` a checkpoint, grown by `train.grow_layers`); the in-context curriculum is
`jobs/configs/icl/stage1.yaml` ... `stage7.yaml` (`make icl-curriculum`). Without MLflow installed the run directory
holds the whole record: `python -m jobs.register RUN_DIR` imports it later.
"""

from __future__ import annotations

from jobs._cli import config_from, flag_overrides, parser, run_main


def main() -> int:
    p = parser("Pretrain the Basis Transformer with DeepSpeed (Ray Train, or one local process); log to MLflow and "
               "register the checkpoint.")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (train.steps)")
    p.add_argument("--workers", type=int, metavar="N", help="Ray Train workers (train.num_workers)")
    p.add_argument("--run-name", metavar="NAME", help="run name; the same name resumes (train.run_name)")
    p.add_argument("--max-minutes", type=float, metavar="M",
                   help="stop after M minutes and still write the final checkpoint (train.max_minutes)")
    p.add_argument("--launcher", choices=["ray", "local"],
                   help="ray: Ray Train workers; local: one process without Ray (train.launcher)")
    args = p.parse_args()
    overrides = flag_overrides(args, {"steps": "train.steps", "workers": "train.num_workers", "run_name": "train.run_name",
                                      "launcher": "train.launcher", "max_minutes": "train.max_minutes"})
    config = config_from(args, overrides)

    from basisfm.train import pretrain
    from basisfm.train.startup import StartupClock

    result = pretrain(config, startup=StartupClock.from_process_start())  # start-up timed from the command
    print(result.summary())  # metrics, checkpoint, MLflow run, registered version, UI command
    return 0 if result.checkpoint_dir.is_dir() else 1


if __name__ == "__main__":
    run_main(main)
