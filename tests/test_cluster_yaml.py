"""cluster.yaml passes Ray's own launcher schema and names what a GPU cluster run needs; base.yaml agrees with it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_the_launchers_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_cluster()))  # what `ray up` runs first; raises on a bad key or shape


def test_cluster_has_a_cpu_head_gpu_workers_and_installs_the_project():
    cluster = _cluster()
    nodes = cluster["available_node_types"]
    head = nodes[cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]
    workers = [n for name, n in nodes.items() if name != cluster["head_node_type"]]
    assert workers and all(n["max_workers"] >= 1 for n in workers)
    assert any(n["node_config"]["InstanceType"].startswith(("g", "p")) for n in workers)  # AWS GPU families
    setup = " && ".join(cluster["setup_commands"])
    assert "pip install --quiet -e ~/basisfm" in setup and "torch==2.13.0" in setup
    assert "/home/ubuntu/basisfm" in cluster["file_mounts"]
    assert any("ray start --head" in c for c in cluster["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cluster["worker_start_ray_commands"])


def test_base_config_puts_every_run_path_on_the_clusters_shared_mount():
    from basisfm.config import load_config

    shared = "/mnt/shared"
    assert any("mount -t nfs4" in c and shared in c for c in _cluster()["setup_commands"])
    config = load_config(ROOT / "jobs" / "configs" / "base.yaml")
    assert config.train.use_gpu and config.train.num_workers >= 2
    for path in (config.corpus.out_dir, config.data.embedding_cache_dir, config.train.storage_path, config.tracking.local_dir):
        assert path.startswith(shared), path
