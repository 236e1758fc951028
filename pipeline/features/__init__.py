"""Static features of the frozen stage-1 model: batched encoding (encode.py), the `embed` stage (embed.py) and the
Parquet tables they are kept in (table.py)."""
