"""A user's own tasks, in a package outside ``scaling``: the plug-in example of the tests.

Configs name them as ``task: {name: "toy_tasks.regression:make_task", ...}``; the
folder holding this package must be on PYTHONPATH for the driver and the workers.
"""
