"""Attribute-aware captions of every image: the attribute schema (attributes.py), the captioner interface
(base.py) and its backends (backends.py: the dataset's own tags, or an MLLM through vLLM or transformers), the
persistent cache (cache.py), the `caption` stage (caption.py) and its output table (captions.py)."""
