"""Sweep configs: YAML -> SweepConfig -> trials.

Modules: ``sweep`` (the section dataclasses, parsing and checks), ``file`` (reading a config
file safely), ``expand`` (the axes' product, streamed in chunks). May import: scaling.tasks,
scaling.store (``reserved_name``), scaling.spec, scaling.errors. Never torch, ray or training.
"""

from scaling.config.sweep import (  # noqa: F401
    MODEL_INPUTS, ENGINES, MAX_TRIALS, MAX_TRIALS_HELD, MAX_DEPTH, MAX_VALUES,
    INT64, NAME_RE, SECTIONS, TOP_KEYS, MAX_STEPS, MetricsConfig,
    SearchConfig, BudgetConfig, EvalConfig, ResourcesConfig, PackingConfig, SweepConfig,
    load_config, config_from_text, count_trials, parse_config,
)
# names the config module has always offered, from their own homes
from scaling.config.file import MAX_CONFIG_BYTES, parse_yaml, read_text  # noqa: F401,E402
from scaling.spec.schema import MODEL_DEFAULTS, MODELS, Trial, make_trial, total_steps, trial_id  # noqa: F401,E402
from scaling.tasks.resolve import own_model, packable, task_kind, task_train_size, validate_task  # noqa: F401,E402
