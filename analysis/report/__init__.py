"""Presenting results; nothing is computed here: ``text`` (number and table primitives),
``fit_text`` and ``rule_text`` (the text of each result), ``plots``, ``html`` (the report
page), ``reproduce`` (``make reproduce``). May import: fit, rules, tables, stats, errors.
"""
