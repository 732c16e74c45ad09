"""`ray job submit` works: a local Ray head (127.0.0.1, free ports, token auth) runs `jobs.pretrain` from a
working_dir through the Jobs API, and the job leaves a registered model in MLflow. The head is stopped after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A Ray head of our own: `ray start --block` in its own session, so stopping it stops only its processes."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the head writes ~/.ray/auth_token; the client reads it
    gcs, dashboard, client, node_manager, object_manager, agent_listen, agent_grpc, env_agent, metrics = _free_ports(9)
    ray = str(Path(sys.executable).with_name("ray"))
    command = [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=3",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
               f"--ray-client-server-port={client}", f"--node-manager-port={node_manager}",
               f"--object-manager-port={object_manager}", f"--dashboard-agent-listen-port={agent_listen}",
               f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
               f"--metrics-export-port={metrics}", "--disable-usage-stats"]
    log = (tmp_path / "ray_head.log").open("w")
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "RAY_AUTH_MODE": "token"})
    address = f"http://127.0.0.1:{dashboard}"
    try:
        yield address, _wait_for_jobs_api(address, head, tmp_path / "ray_head.log")
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head takes its raylet, GCS and dashboard down with it
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        log.close()


def _wait_for_jobs_api(address: str, head: subprocess.Popen, log: Path, timeout_s: float = 180):
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while True:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return JobSubmissionClient(address)
        except Exception as exc:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                pytest.fail(f"the Jobs API at {address} did not come up in {timeout_s} s: {exc}\n{log.read_text()[-3000:]}")
            time.sleep(2)


def _submit_when_the_agent_is_up(client, job: dict, timeout_s: float = 180) -> str:
    """The Jobs API answers before the head's job agent is ready ("No available agent"): retry until it is."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(3)


def test_job_submit_runs_pretrain_and_registers_a_model(ray_head, tiny_corpus, tmp_path):
    from ray.job_submission import JobStatus

    from basisfm.tracking.mlflow_logger import make_client

    address, client = ray_head
    tracking_dir = tmp_path / "mlflow"
    overrides = {
        "corpus.out_dir": tiny_corpus,
        "data.embedding_cache_dir": tiny_corpus.parent / "embedding_cache",
        "data.validation_tables": 1,
        "data.token_budget": 512,
        "train.storage_path": tmp_path / "ray",
        "train.run_name": "submitted",
        "train.num_workers": 1,  # 2 ranks are covered by test_train_pretrain; here the Jobs path is the point
        "train.steps": 2,
        "train.warmup_steps": 1,
        "train.checkpoint_every": 2,
        "train.validate_every": 2,
        "tracking.local_dir": tracking_dir,
        "tracking.tracking_uri": "null",
    }
    sets = " ".join(f"--set {key}={value}" for key, value in overrides.items())
    # The README's command, through the SDK: the repo as working_dir, the job module as entrypoint.
    job = dict(
        entrypoint=f"{sys.executable} -m jobs.pretrain --config jobs/configs/tiny.yaml {sets}",
        runtime_env={
            "working_dir": str(ROOT),
            # As in the README: ship the package itself, so workers import it without an install.
            "py_modules": [str(ROOT / "platform" / "basisfm")],
            "excludes": [".git", ".venv", "runs", "tests", "benchmarks/results"],
            "env_vars": {"DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                         "MLFLOW_TRACKING_URI": ""},
        },
    )
    job_id = _submit_when_the_agent_is_up(client, job)
    deadline = time.monotonic() + 480
    status = client.get_job_status(job_id)
    while status not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.monotonic() < deadline:
        time.sleep(3)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {job_id} ended {status}:\n{logs[-4000:]}"
    assert "registered:  version 1" in logs and "pretraining finished" in logs

    registry = make_client(f"sqlite:///{tracking_dir / 'mlflow.db'}")
    versions = registry.search_model_versions("name = 'basisfm'")
    assert [str(v.version) for v in versions] == ["1"]
