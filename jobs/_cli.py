"""The argument parsing every job shares: `--config FILE` and repeatable `--set section.key=value`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from basisfm.config import RunConfig, load_config
from basisfm.errors import BasisError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"


def parser(description: str, default_config: Path = DEFAULT_CONFIG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    shown = default_config.relative_to(Path(__file__).parent.parent) if default_config.is_absolute() else default_config
    p.add_argument("--config", default=str(default_config), help=f"YAML run config (default: {shown})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set data.token_budget=4096 (repeatable)")
    return p


def config_from(args: argparse.Namespace, extra_overrides: list[str] | None = None) -> RunConfig:
    return load_config(args.config, list(args.overrides) + list(extra_overrides or []))


def flag_overrides(args: argparse.Namespace, keys: dict[str, str]) -> list[str]:
    """`--set`-style overrides for the convenience flags a job offers: {flag dest: config key}, unset flags skipped.

    Values are written as JSON (which is YAML), so a path or a name stays a string and a list stays a list.
    """
    return [f"{key}={json.dumps(getattr(args, flag))}" for flag, key in keys.items() if getattr(args, flag) is not None]


INTERRUPTED_EXIT = 130  # the shell's code for a process ended by Ctrl-C (128 + SIGINT)


def run_main(main, interrupted: str = "interrupted") -> None:
    """Run a job's main(); a user error prints one clear line and exits 2 instead of a traceback.

    User errors are basisfm's own (`BasisError`) and the file system's (a path that does not exist or
    cannot be written, with the path named). Ctrl-C prints `interrupted` (a job that resumes says so) and
    exits 130. Anything else is a bug and keeps its traceback.
    """
    try:
        code = main()
    except BasisError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"error: {exc.strerror or type(exc).__name__}: {exc.filename}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())
