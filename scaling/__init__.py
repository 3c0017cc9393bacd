"""scaling: measure scaling laws with sweeps of small PyTorch trials.

The core library (this package) never imports ray; ``cluster`` schedules
trials on Ray and ``analysis`` fits the results without torch or ray.
"""

try:
    from importlib.metadata import version as _version

    __version__ = _version("scaling")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
