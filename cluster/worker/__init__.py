"""What runs inside Ray tasks on the workers: ``units`` (train a unit of trials and commit
its rows; the warm-up task), ``ddp`` (a trial over several workers with Ray Train).
May import: scaling.training, scaling.store, scaling.tasks, scaling.spec. Never the driver.
"""
