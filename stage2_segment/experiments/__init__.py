"""Experiments over the engine: `compare` (several methods on one benchmark), `tune` (a grid over a
method's settings) and `label_check` (which subclass names a backbone confuses).
"""
