"""The triplets table every later stage reads (`data/triplets/<split>.parquet`).

reference and target are image names within the row's category; caption1 and caption2 the modification texts;
prompt the reference's sentence-level caption appended to the query (or ""); query_text the validation-form query.
pair_id and subset are the benchmark's own (CIRR's pairid and img_set members, used by its protocol and test server);
generated triplets have neither. Test-split triplets (CIRR's test1) have target "".
"""

from __future__ import annotations

import pyarrow as pa

TRIPLET_SCHEMA = pa.schema([(name, pa.string()) for name in (
    "triplet_id", "category", "split", "source", "pair_id", "reference", "target", "caption1", "caption2",
    "reference_caption", "target_caption", "prompt", "query_text")] + [("subset", pa.list_(pa.string()))])
TRIPLET_COLUMNS = TRIPLET_SCHEMA.names
