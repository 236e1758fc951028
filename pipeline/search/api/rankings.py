"""The validation rankings `evaluate` writes (Paths.val_rankings), kept in memory and re-read when rewritten."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class Rankings:
    """The val rankings file, re-read when `evaluate` rewrites it, sorted failures first (worst rank first)."""

    def __init__(self, path: Path):
        self.path, self.stamp, self.table = path, None, pd.DataFrame()

    def load(self) -> pd.DataFrame | None:
        """The sorted table, or None while the file does not exist."""
        if not self.path.is_file():
            return None
        stat = self.path.stat()
        if self.stamp != (stat.st_mtime_ns, stat.st_size):
            table = pd.read_parquet(self.path)
            severity = table["target_rank"].where(table["target_rank"] > 0, 1 << 30)  # 0: not rankable, worst
            table = table.assign(severity=severity).sort_values(["severity", "triplet_id"], ascending=[False, True])
            self.table, self.stamp = table.reset_index(drop=True), (stat.st_mtime_ns, stat.st_size)
        return self.table
