"""Nearest-neighbour search over gallery features with FAISS."""
