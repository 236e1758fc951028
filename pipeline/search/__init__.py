"""Search over the gallery: its features and index (gallery.py, index.py; FAISS or Milvus behind vectors.py), the
engine that answers queries (engine.py, filters.py) and the server (server.py builds the app from the routers in
api/; batching.py, live.py, guard.py, monitoring.py)."""
