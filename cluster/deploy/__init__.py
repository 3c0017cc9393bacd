"""What the deployment files in cluster/deploy/ must agree on with the code.

The image is built from cluster/deploy/Dockerfile; the cluster files run the
same ``scaling sweep`` command a user runs locally, joined to the cluster with
``--address auto`` (inside a Ray node) and writing to shared storage.
"""

IMAGE = "ghcr.io/scaling-lab/scaling:0.1.0"
"""Image with the package, torch==2.13.0 and ray 2.60.0 (cluster/deploy/Dockerfile)."""
GPU_IMAGE = "ghcr.io/scaling-lab/scaling:0.1.0-gpu"
"""The same on the Ray GPU base image, for GPU workers."""
RAY_VERSION = "2.60.0"
SWEEP_COMMAND = "scaling sweep"
"""Every deployment file starts sweeps with this command."""
CLUSTER_FILE = "cluster/deploy/ray-cluster.aws.yaml"
RAYJOB_FILE = "cluster/deploy/rayjob.yaml"
