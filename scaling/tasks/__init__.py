"""Tasks: built-in ones that run offline, and plug-in tasks from your own package.

Each built-in task has a spec: it validates its options, knows its training-pool
size without loading anything (so configs are checked before work starts), and
loads its data. The data of a task depends only on its options, never on the
trial seed, so every trial of a sweep sees the same pool and test set. No torch
here: data are numpy arrays (models and losses live in scaling.training).

Built-in tasks (``task:`` in a sweep config)::

    {name: digits}                                  sklearn's 8x8 digits (images, 1x8x8)
    {name: teacher, input_dim: 32, pool: 20000}     a random teacher network's labels
    {name: mnist, data_dir: DIR}                    MNIST IDX files (plain or .gz)
    {name: fashion_mnist, data_dir: DIR}            Fashion-MNIST, the same format
    {name: cifar10, data_dir: DIR}                  CIFAR-10, binary version
    {name: text, path: FILE, context: 64}           next-byte prediction on a file
    {name: text, corpus: stdlib, context: 64}       ... on Python's standard library (built in)

A relative ``data_dir`` or ``path`` is taken from the current directory and
stored absolute in the trial config, so it is part of the trial id: write an
absolute path (the same on every machine) for ids that survive a move.

Plug-in tasks
-------------
``task: {name: "mypackage.module:make_task", **options}`` imports
``mypackage.module`` with importlib and calls ``make_task(**options)``. Only
functions marked with the :func:`task_factory` decorator can be named, so a
config cannot call an arbitrary function (``subprocess:run``); a module not yet
imported is imported only after its source shows the decorator on that function
(:mod:`scaling.tasks.plugins`), so naming anything else runs none of its code. The
module must be importable on the driver *and* on every Ray worker: install it
in the workers' environment or put its folder on their PYTHONPATH (a local Ray
inherits the driver's environment). Options must be plain YAML values (numbers,
strings, booleans, lists, mappings); they are part of the trial id. The factory
returns a :class:`Dataset` (or a mapping of its fields):

- ``x_train, y_train, x_test, y_test``: numpy arrays: the training pool (trials
  draw their ``n_train`` examples from it) and the fixed test set. Features are
  float32 (vectors, or flattened images with ``input_shape=(C, H, W)``) or
  integer tokens.
- ``x_val, y_val`` (optional, recommended): a fixed validation set, disjoint from
  the pool and the test set. The analysis selects the best configuration on it
  and reports test; without it the ``val_*`` columns are null and the analysis
  cross-fits over seeds instead.
- ``data_version`` (optional, default "1"): change it when the data the factory
  returns changes, so a resume does not mix results from two versions.
- ``n_classes``: output size of the built-in models (classes, or the vocabulary).
- ``make_model`` (optional): ``make_model(model: dict) -> torch.nn.Module``, where
  ``model`` is the trial's ``{"name": "task", "width": W, "depth": D}``; chosen
  with ``model: {name: task}``. Torch's RNG is seeded from the trial seed around
  the call, so build the modules inside it and do not reseed.
- ``loss`` (optional): ``loss(output, y) -> scalar tensor``, the mean over the
  batch; default: cross-entropy over the last axis of ``output``.
- ``metric`` (optional): ``metric(output, y) -> scalar tensor``, a mean over the
  batch, stored as ``test_acc`` (so higher should be better); default: accuracy.
- ``tokens_per_example`` (optional): what one example adds to ``examples_seen``
  (the sequence length for a language model); default 1.

The driver calls the factory once while checking the config (to learn the pool
size), and each worker once per process, so it must be deterministic: the same
options give the same data everywhere. Raise ``ValueError`` for bad options; the
message is shown as one line. A task with its own model, ``loss`` or ``metric``
packs through the vmap backend (scaling.training.backends.vmap) when ``torch.func.vmap`` can
batch them (no batch statistics, no dropout); otherwise its trials run one by one.

Modules
-------
``base`` (Dataset, TaskSpec), ``builtin`` (digits, teacher, file tasks: the TASKS
registry), ``files`` (IDX, CIFAR and text readers), ``corpus`` (built-in text), ``plugins`` (``@task_factory``, checked in
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
