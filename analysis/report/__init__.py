"""Presenting results; nothing is computed here: ``text`` (number and table primitives),
``fit_text`` and ``rule_text`` (the text of each result), ``figures`` (Plotly JSON: the figures
of the report and of ``scaling serve``, one code), ``plots`` (matplotlib files for ``--plot``), ``training`` (training
curves of chosen trials, from a store's curves table), ``page`` (HTML pieces, escaped),
``cards`` (the headline cards), ``html`` (the report page), ``reproduce`` (``make reproduce``).
May import: fit, rules, tables, stats, errors.
"""
