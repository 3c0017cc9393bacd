"""The data a trial trains on: built-in tasks, local files and plug-ins.

Modules: ``base`` (Dataset, TaskSpec), ``builtin`` (digits, teacher, file tasks: the TASKS
registry), ``files`` (IDX, CIFAR and text readers), ``plugins`` (``@task_factory``, checked in
source before import), ``resolve`` (validate a task, load it, answer the planner's questions).
May import: scaling.spec, scaling.errors, numpy (scikit-learn lazily). Never torch, ray, the
store, config or training.

The plug-in API ``from scaling.tasks import Dataset, task_factory`` is this package's surface.
"""

from scaling.tasks.base import (  # noqa: F401
    Dataset, TaskSpec,
)
from scaling.tasks.builtin import (  # noqa: F401
    DIGITS_TEST_SIZE, DIGITS_VAL_SIZE, DIGITS_SPLIT_SEED, MAX_TEACHER_VALUES, MAX_CONTEXT, TASKS,
)
from scaling.tasks.plugins import (  # noqa: F401
    MAX_SOURCE_BYTES, NOT_A_FACTORY, not_importable, check_declared, find_spec, PLUGIN_RE,
    is_plugin, task_factory,
)
from scaling.tasks.resolve import (  # noqa: F401
    validate_task, task_train_size, task_kind, own_model, packable, task_data_version,
    task_shape, load_task,
)
