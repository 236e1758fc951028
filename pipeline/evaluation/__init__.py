"""Evaluation as the literature computes it: the protocols (protocols.py, metrics.py), each recall in context
(context.py), the `evaluate` stage (evaluate.py), its picture of a few queries (retrievals.py) and the plots page
(plots.py)."""
