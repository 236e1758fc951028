"""Hard negatives: the search (hard.py), what is never a negative (false_negatives.py) and the one mining rule the
`mine` stage and stage 2 share (mine.py)."""
