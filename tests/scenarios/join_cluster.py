"""Scenario run in its own process: an existing Ray cluster, joined by `scaling sweep`
through --address HOST:PORT, through a ray:// client address, and through RAY_ADDRESS.

Prints one JSON line: {mode: [returncode, stdout tail]}. Usage: join_cluster.py CONFIG RESULTS CLIENT_PORT
"""

import json
import os
import subprocess
import sys

from ray.cluster_utils import Cluster


def main(config: str, results: str, client_port: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "ray_client_server_port": int(client_port), "include_dashboard": False})
    cluster.wait_for_nodes()
    out = {}
    runs = {"address": ["--address", cluster.address],
            "client": ["--address", f"ray://127.0.0.1:{client_port}"],
            "env": []}
    try:
        for mode, extra in runs.items():
            env = {**os.environ, **({"RAY_ADDRESS": cluster.address} if mode == "env" else {})}
            proc = subprocess.run([sys.executable, "-m", "cluster.cli", "sweep", config, "--results",
                                   f"{results}/{mode}", "--quiet", *extra],
                                  capture_output=True, text=True, timeout=240, env=env)
            out[mode] = [proc.returncode, proc.stdout.strip().splitlines()[-2:], proc.stderr[-500:]]
    finally:
        cluster.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
