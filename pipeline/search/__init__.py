"""Search over the gallery: its features and index (gallery.py, index.py; FAISS or Milvus), the engine that answers
queries (engine.py, filters.py) and the server (server.py, batching.py)."""
