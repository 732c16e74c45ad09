"""The starting checkpoints of `benchmarks.missing_values`' continued-pretraining arms: the shipped in-context
model with its missing-value strategy swapped, every other weight kept.

A strategy other than `learnable` must be learned before it can be compared, and pretraining the whole model
anew per strategy is beyond a CPU budget; so every arm starts from the shipped checkpoint (trained with
`learnable`), gets the strategy's own tokens set to the learned [MISSING] token (none for `attention_mask`), and
is then continued on the prior for the same steps (`jobs.pretrain`, commands in benchmarks/results/missing_values.md).
The `learnable` arm, continued the same steps, is the control. The tokens start at the learned one rather than
fresh because at the continued learning rate (about 1e-4, where the shipped run's schedule ended) a fresh
std-0.02 token moves about 0.005 in 50 steps: the arms would measure their random start, not their strategy.
Started this way every token arm predicts exactly as the control does at step 0, and what continued training
makes of the extra freedom is the strategy's effect.

    python -m benchmarks._missing_values_arms --out runs/missing-arms
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

ARM_STRATEGIES = ("learnable", "type_aware", "per_column", "attention_mask")


def swap_missing_strategy(source: str | Path, strategy: str, out: str | Path) -> Path:
    """`source`'s model (a `learnable` one) with `model.missing = strategy`: its weights copied, every token of
    the new strategy set to the learned [MISSING] token, written to `out` (model.safetensors + config.json)."""
    from basisfm.model import build_model
    from basisfm.model.checkpoint import load_pretrained, read_text_top_k, save_pretrained

    base = load_pretrained(source)
    if base.config.missing != "learnable":
        raise ValueError(f"{source}: missing strategy {base.config.missing!r}; the arms start from a 'learnable' model")
    learned = base.state_dict()["missing.token"]  # [d]
    model = build_model(dataclasses.replace(base.config, missing=strategy))
    state = {name: tensor for name, tensor in base.state_dict().items() if not name.startswith("missing.")}
    for name, tensor in model.state_dict().items():
        if name.startswith("missing."):  # missing.token [d] or missing.tokens.weight [n, d]
            state[name] = learned.expand_as(tensor).clone()
    model.load_state_dict(state, strict=True)
    return save_pretrained(model, out, text_top_k=read_text_top_k(source))


def main() -> int:
    from basisfm.pretrained.checkpoints import resolve_checkpoint

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="in_context", help="checkpoint to start from (default: the shipped in-context one)")
    p.add_argument("--out", default="runs/missing-arms", help="folder for one <strategy>-init checkpoint per arm")
    args = p.parse_args()
    source = resolve_checkpoint(args.source)
    for strategy in ARM_STRATEGIES:
        print(swap_missing_strategy(source, strategy, Path(args.out) / f"{strategy}-init"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
