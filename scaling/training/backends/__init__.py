"""The math of a training step, one module per backend; the schedule lives in ``training/loop.py``.

- ``module``: one ``nn.Module`` per trial (any model; what the ddp backend wraps).
- ``stacked``: members of a pack as stacked weight tensors, one batched matmul per layer (the MLP).
- ``vmap``: any packable model, members batched with ``torch.func.vmap``.

A backend supplies ``step``, ``evaluate`` and ``rows`` to ``loop.run_members``; see loop.py.
"""
