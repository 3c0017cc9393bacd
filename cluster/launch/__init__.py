"""Starting or joining Ray safely: ``connect`` (address, token, reachability), ``localray``
(an embedded local instance on 127.0.0.1), ``reaper`` (its processes die with the driver),
``netns`` (a private network namespace). May import: scaling.errors. Never torch, driver or worker.
"""
