"""Batch-size rules: ``bopt`` (B_opt per group and the collapse), ``optima`` (grid optima),
``sgd_rule`` (the check of B_opt proportional to lr*N/(1-m)), ``joint_optimum`` (the joint
(lr, B) optimum), ``tradeoff`` (S-E trade-off of one group), ``critical`` (B_crit for every
group of a sweep). May import: analysis.tables, analysis.stats, analysis.errors.
"""
