"""The models: open_clip encoders (clip.py), the retrieval wrapper that composes queries (retrieval.py, with the
composition functions in composition.py), and how an image is prepared for them (preprocessing.py)."""
