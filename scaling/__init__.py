"""scaling: measure scaling laws with sweeps of small PyTorch trials.

The core library (this package) never imports ray; ``cluster`` schedules
trials on Ray and ``analysis`` fits the results without torch or ray.
"""


def __getattr__(name: str):
    """``__version__`` on first use: reading the installed metadata costs a command's start-up
    ~0.02-0.25 s, and only ``--version`` and a trial's record need it."""
    if name != "__version__":
        raise AttributeError(f"module 'scaling' has no attribute {name!r}")
    try:
        from importlib.metadata import version

        value = version("scaling")
    except Exception:  # running from a source tree that is not installed
        value = "0.0.0+unknown"
    globals()["__version__"] = value
    return value
