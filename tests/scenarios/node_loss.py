"""Fault scenario run in its own process: a multi-node Ray (ray.cluster_utils.Cluster)
loses a worker node mid-sweep, and a trial on a (fake) GPU node raises on every attempt.

Prints one JSON line with what happened; tests/test_faults.py asserts on it.
Usage: python node_loss.py RESULTS_DIR CONFIG_NODE_LOSS CONFIG_RAISING
"""

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from cluster.driver.sweep import run_sweep
from scaling.config.sweep import load_config


def main(results: str, node_loss_cfg: str, raising_cfg: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1, num_gpus=1)  # claims a GPU it does not have
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")

    cfg = load_config(node_loss_cfg)
    out: dict = {}

    def sweep() -> None:
        out["summary"] = run_sweep(cfg, Path(node_loss_cfg).read_text(), results, progress=False,
                                   log=lambda *_: None).counts

    thread = threading.Thread(target=sweep)
    thread.start()
    trials_dir = Path(results) / cfg.name / "trials"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(trials_dir.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    out["stored_before_removal"] = len(list(trials_dir.glob("*.parquet")))
    cluster.remove_node(doomed, allow_graceful=False)
    thread.join(timeout=300)

    raising = load_config(raising_cfg)
    out["raising"] = run_sweep(raising, Path(raising_cfg).read_text(), results, progress=False,
                               log=lambda *_: None).counts
    print(json.dumps(out))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
