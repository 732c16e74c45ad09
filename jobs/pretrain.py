"""`python -m jobs.pretrain`: pretrain the Basis Transformer on the corpus (DeepSpeed) and register it.

Locally: `python -m jobs.pretrain --config jobs/configs/tiny.yaml` (Ray Train workers on a local Ray), or
`--launcher local` (one process, no Ray: a single-GPU machine or the CPU). On a cluster: the same module
through `ray job submit` (see the README). Rerunning with the same train.run_name resumes from its last checkpoint.
"""

from __future__ import annotations

from jobs._cli import config_from, flag_overrides, parser, run_main


def main() -> int:
    p = parser("Pretrain the Basis Transformer with DeepSpeed (Ray Train, or one local process); log to MLflow and "
               "register the checkpoint.")
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (train.steps)")
    p.add_argument("--workers", type=int, metavar="N", help="Ray Train workers (train.num_workers)")
    p.add_argument("--run-name", metavar="NAME", help="run name; the same name resumes (train.run_name)")
    p.add_argument("--launcher", choices=["ray", "local"],
                   help="ray: Ray Train workers; local: one process without Ray (train.launcher)")
    args = p.parse_args()
    overrides = flag_overrides(args, {"steps": "train.steps", "workers": "train.num_workers", "run_name": "train.run_name",
                                      "launcher": "train.launcher"})
    config = config_from(args, overrides)

    from basisfm.train import pretrain

    result = pretrain(config)
    print(result.summary())  # metrics, checkpoint, MLflow run, registered version, UI command
    return 0 if result.checkpoint_dir.is_dir() else 1


if __name__ == "__main__":
    run_main(main)
