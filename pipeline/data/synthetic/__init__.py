"""The procedurally rendered demo catalogue, written in FashionIQ's layout (the `synthesize` stage)."""
