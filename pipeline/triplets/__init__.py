"""Training and validation triplets: the annotated pairs and the attribute-aware generated ones (triplets.py,
generated.py, phrasing.py), their schema (schema.py) and the query texts built from them (query_text.py)."""
