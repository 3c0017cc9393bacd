"""The analysis subcommands (fit, fit-joint, bopt, bcrit, compute-optimal, report):
``parsers`` (flags), ``handlers`` (actions), ``args`` (shared flags and reading the table).
May import everything in analysis and scaling.errors.
"""
