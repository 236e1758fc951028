"""The gallery in a Milvus collection (`index.backend: milvus`), for a catalogue that outgrows one process.

One client, pymilvus, talks to Milvus Lite (an embedded store in a local file: pure Python with FAISS inside,
nothing downloaded at run time) on one machine and in the tests, and to Milvus Standalone or Distributed (sharded,
replicated) at a server URL in production. docs/design.md says why Milvus and what changes on a cluster.

The collection holds one entity per gallery image: its primary key is the gallery name (the product id), then the
feature, a `key` digest of everything the entity holds (feature and filterable values), and each filterable column as
lowercase text `t<i>`, a numeric column also as a number `n<i>` with `s<i>` saying whether the cell has one. The `index`
stage syncs it to the gallery (`sync`): entities whose key changed are upserted, names no longer in the gallery are
deleted, the rest is not touched; what it wrote is remembered (`SyncedKeys`) for the next sync's diff. A search's
filters become a Milvus boolean expression on those fields (`expression`), evaluated by Milvus inside the search, with
the same meaning as pipeline/search/filters.py gives them over a FAISS index.

The gallery lives in two collections, `<index.collection>_a` and `<index.collection>_b` (`next_slot`): each run of
the stage that changes the gallery syncs the one the index it replaces did not use, then index.json points at it, so a
server still answering from the previous version (pipeline/search/live.py) never searches a collection half synced;
each slot diffs against what it was last synced to. The price is the collection stored twice.

DVC does not track the server: it tracks index/ (index.json says which collection holds its version, its field
layout and how many entities it holds; gallery.parquet names every one of them). The collection records the version
it was synced to (the property `fashion_cir.version`); the engine checks at start that it holds that version and
that many entities, and `dvc repro -f index` syncs a collection that drifted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.config import IndexParams
from pipeline.errors import PipelineError
from pipeline.paths import Paths
from pipeline.search.faiss_index import inverted_lists, probed_lists
from pipeline.search.filters import Condition, is_number, numeric_columns

TOKEN_VARIABLE = "MILVUS_TOKEN"  # "user:password" or an API key; never in params.yaml
SERVER_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")
BATCH = 1000  # entities per upsert, delete or query call
INDEX_PROPERTY = "fashion_cir.index"  # the collection property recording the vector index it was given
VERSION_PROPERTY = "fashion_cir.version"  # the collection property recording the index version it holds
SLOTS = ("a", "b")
TEXT_LENGTH = 4096
NAME_LENGTH = 1024


def location(uri: str, paths: Paths) -> str:
    """A server URL as given; a local Milvus Lite file relative to the repository ("" = data/gallery/milvus.db)."""
    if SERVER_URI.match(uri):
        return uri
    return str(paths.milvus_lite if not uri else paths.root / uri)


def connect(uri: str):  # -> pymilvus.MilvusClient (imported here: only this backend needs it)
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise PipelineError("index.backend = milvus needs pymilvus and milvus-lite: pip install pymilvus "
                            "milvus-lite.") from None
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)  # its errors come back here as one sentence
    # Milvus Lite's in-process gRPC server logs a traceback for each call it leaves to the client's fallback (the
    # query iterator asks for a timestamp it does not serve); the answers are whole, the traceback is noise
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    if not SERVER_URI.match(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(uri=uri, token=os.environ.get(TOKEN_VARIABLE, ""))
    except Exception as error:  # pymilvus raises its own and grpc's exceptions
        if SERVER_URI.match(uri):
            raise PipelineError(f"could not reach Milvus at {uri} (index.uri): {_reason(error)}.") from None
        raise PipelineError(f"could not open the Milvus Lite file {uri} (index.uri): {_reason(error)}; one process "
                            f"at a time can hold it (is `fashion-cir serve` running?): to search while indexing, "
                            f"run `milvus-lite server --data-dir <folder>` and set index.uri to its URL.") from None


def _reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0].rstrip(".") if message.strip() else type(error).__name__


def field_layout(gallery: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Where each filterable column lives in the collection: its text field, and for a numeric column its number
    field and the flag saying whether a cell has a number."""
    numeric = numeric_columns(gallery[columns])
    return [{"column": column, "text": f"t{i}", "number": f"n{i}" if column in numeric else None,
             "set": f"s{i}" if column in numeric else None} for i, column in enumerate(columns)]


def _scalars(gallery: pd.DataFrame, layout: list[dict]) -> dict[str, list]:
    """field -> one value per gallery row, for every filterable field of the layout."""
    columns: dict[str, list] = {}
    for field in layout:
        values = gallery[field["column"]]
        columns[field["text"]] = values.astype(str).str.strip().str.lower().str.slice(0, TEXT_LENGTH).tolist()
        if field["number"]:
            numbers = numeric_columns(gallery[[field["column"]]])[field["column"]]
            columns[field["set"]] = numbers.notna().tolist()
            columns[field["number"]] = numbers.fillna(0.0).astype(float).tolist()
    return columns


def _keys(features: np.ndarray, scalars: dict[str, list]) -> list[str]:
    """Per gallery row, a digest of everything its entity holds: what says whether a stored entity is current."""
    fields = sorted(scalars)
    return [hashlib.blake2b(features[i].tobytes() + json.dumps([scalars[f][i] for f in fields]).encode(),
                            digest_size=16).hexdigest() for i in range(len(features))]


def _entities(rows: list[int], names: list[str], features: np.ndarray, scalars: dict[str, list], keys: list[str]
              ) -> list[dict]:
    """The entities of some gallery rows, built only when they are sent (a vector as a list of floats is large)."""
    return [{"name": names[i], "vector": features[i].tolist(), "key": keys[i],
             **{field: values[i] for field, values in scalars.items()}} for i in rows]


def _schema(dimension: int, layout: list[dict]):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=NAME_LENGTH)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    schema.add_field("key", DataType.VARCHAR, max_length=64)
    for field in layout:
        schema.add_field(field["text"], DataType.VARCHAR, max_length=TEXT_LENGTH)
        if field["number"]:
            schema.add_field(field["number"], DataType.DOUBLE)
            schema.add_field(field["set"], DataType.BOOL)
    return schema


def _fields_of(description: dict) -> dict[str, object]:
    """name -> type (and the vector's dimension) of a described collection: what decides whether it fits."""
    return {f["name"]: (str(f["type"]), f.get("params", {}).get("dim")) for f in description["fields"]}


def index_spec(settings: IndexParams, n: int, built_lists: int | None = None) -> dict:
    """The Milvus vector index `index.kind` asks for over `n` entities (or, for an IVF index already built, with
    its `built_lists`), and its search parameters."""
    if settings.kind == "flat":
        return {"index_type": "FLAT", "params": {}, "search": {}}
    if settings.kind == "hnsw":
        return {"index_type": "HNSW", "params": {"M": settings.hnsw_m, "efConstruction": settings.ef_construction},
                "search": {"ef": settings.ef_search}}
    nlist = built_lists or inverted_lists(settings, n)
    search = {"nprobe": probed_lists(settings, nlist)}
    if settings.kind == "ivf":
        return {"index_type": "IVF_FLAT", "params": {"nlist": nlist}, "search": search}
    return {"index_type": "IVF_PQ", "params": {"nlist": nlist, "m": settings.pq_m or 0, "nbits": 8},
            "search": search}


def _asked(settings: IndexParams) -> str:
    """The index settings as asked (nlist 0 stays 0): the same ask keeps the index built, however the gallery grew."""
    keys = ("kind", "nlist", "hnsw_m", "ef_construction", "pq_m")
    return json.dumps({key: getattr(settings, key) for key in keys}, sort_keys=True)


def next_slot(settings: IndexParams, previous: dict | None, version: str) -> str:
    """The collection this run syncs: the one the previous index (its index.json, `previous`) serves when the
    version is unchanged (nothing to sync), else the other slot."""
    served = (previous or {}).get("milvus", {})
    slots = [f"{settings.collection}_{slot}" for slot in SLOTS]
    if served.get("uri") != settings.uri or served.get("collection") not in slots:
        return slots[0]
    if previous.get("version") == version:
        return served["collection"]
    return slots[1 - slots.index(served["collection"])]


def sync(gallery: pd.DataFrame, features: np.ndarray, columns: list[str], settings: IndexParams, paths: Paths,
         collection: str | None = None, version: str = "") -> tuple[dict, dict[str, int]]:
    """Make the collection (index.collection unless named) hold exactly the gallery's rows, recording `version`;
    the manifest index.json records, and the counts."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    uri, collection = location(settings.uri, paths), collection or settings.collection
    if settings.kind == "ivfpq" and not SERVER_URI.match(uri):
        raise PipelineError("index.kind = ivfpq is not built by Milvus Lite (a local index.uri), which builds FLAT, "
                            "IVF_FLAT and HNSW; use flat, ivf or hnsw here, or point index.uri at a Milvus server.")
    layout, names = field_layout(gallery, columns), gallery["name"].astype(str).tolist()
    client: MilvusClient = connect(uri)
    synced = SyncedKeys(paths.gallery_cache, f"{uri}#{collection}")
    try:
        spec, created = _ensure_collection(client, collection, features.shape[1], layout, settings, len(names))
        remembered = {} if created else synced.load()
        if created or (remembered and _count(client, collection) == len(remembered)):
            stored = remembered
        else:
            stored = _stored_keys(client, collection)
        scalars = _scalars(gallery, layout)
        keys = _keys(features, scalars)
        changed = [i for i, (name, key) in enumerate(zip(names, keys, strict=True)) if stored.get(name) != key]
        gone = sorted(set(stored) - set(names))
        for start in tqdm(range(0, len(changed), BATCH), desc="milvus upsert", unit="batch", mininterval=2):
            client.upsert(collection, _entities(changed[start:start + BATCH], names, features, scalars, keys))
        for start in range(0, len(gone), BATCH):
            client.delete(collection, ids=gone[start:start + BATCH])
        client.flush(collection)
        client.alter_collection_properties(collection, properties={VERSION_PROPERTY: version})
        client.load_collection(collection)
        count = _count(client, collection)
        if count == len(names):
            synced.save(dict(zip(names, keys, strict=True)))
    except MilvusException as error:
        raise PipelineError(f"Milvus at {uri} (index.uri) refused the sync of collection '{collection}': "
                            f"{_reason(error)}.") from None
    finally:
        synced.close()
        client.close()
    if count != len(names):
        raise PipelineError(f"the Milvus collection '{collection}' at {uri} holds {count} entities after the sync, "
                            f"not the gallery's {len(names)}; run `dvc repro -f index`.")
    manifest = {"uri": settings.uri, "collection": collection, "fields": layout, "entities": count, "version": version,
                **spec}
    return manifest, {"upserted": len(changed), "deleted": len(gone), "recreated": int(created)}


def _ensure_collection(client, collection: str, dimension: int, layout: list[dict], settings: IndexParams, n: int
                       ) -> tuple[dict, bool]:
    """The collection with this layout and the vector index asked for, (re)created or re-indexed only where they
    differ; its index spec, and whether it was created empty."""
    schema = _schema(dimension, layout)
    created = False
    if client.has_collection(collection):
        description = client.describe_collection(collection)
        wanted = {f.name: (str(f.dtype), f.params.get("dim")) for f in schema.fields}
        if _fields_of(description) != wanted:
            client.drop_collection(collection)  # another model's dimension, or other filterable columns
    if not client.has_collection(collection):
        spec = index_spec(settings, n)
        client.create_collection(collection, schema=schema, index_params=_index_params(client, spec),
                                 consistency_level="Strong")
        created = True
    else:
        recorded = client.describe_collection(collection).get("properties", {}).get(INDEX_PROPERTY, "")
        previous = json.loads(recorded) if recorded else {}
        if previous.get("asked") == _asked(settings):  # the index stays; its search parameters may have changed
            client.load_collection(collection)  # a collection another process wrote is released until loaded
            return index_spec(settings, n, previous["spec"]["params"].get("nlist")), False
        spec = index_spec(settings, n)
        client.release_collection(collection)
        for name in client.list_indexes(collection):
            client.drop_index(collection, index_name=name)
        client.create_index(collection, _index_params(client, spec))
    client.alter_collection_properties(collection, properties={
        INDEX_PROPERTY: json.dumps({"asked": _asked(settings), "spec": spec}, sort_keys=True)})
    client.load_collection(collection)
    return spec, created


def _index_params(client, spec: dict):
    """The vector index's build request. Its parameters go nested under "params" (the request's older form, which
    Milvus servers still read): Milvus Lite reads only that form and would build with its defaults otherwise."""
    params = client.prepare_index_params()
    params.add_index(field_name="vector", index_type=spec["index_type"], metric_type="IP",
                     params={"params": spec["params"]} if spec["params"] else {})
    return params


class SyncedKeys:
    """What the `index` stage last wrote to a collection (name -> key), kept in the gallery cache's SQLite file
    (table milvus_synced), so that the next sync need not read every key back: Milvus Lite answers each page of such
    a read by scanning the collection, minutes at 400,000 entities. It is trusted only while the collection holds as
    many entities as it records (the stage owns the collection); otherwise the keys are read from Milvus."""

    def __init__(self, path: Path, where: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.where = where
        self._db = sqlite3.connect(str(path))
        self._db.execute("CREATE TABLE IF NOT EXISTS milvus_synced (place TEXT, name TEXT, key TEXT, "
                         "PRIMARY KEY (place, name))")
        self._db.commit()

    def load(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT name, key FROM milvus_synced WHERE place = ?", [self.where]))

    def save(self, keys: dict[str, str]) -> None:
        """Replace the record with `keys`, all at once (a killed run leaves the previous one)."""
        with self._db:
            self._db.execute("DELETE FROM milvus_synced WHERE place = ?", [self.where])
            self._db.executemany("INSERT INTO milvus_synced VALUES (?, ?, ?)",
                                 [(self.where, name, key) for name, key in keys.items()])

    def close(self) -> None:
        self._db.close()


def _stored_keys(client, collection: str) -> dict[str, str]:
    """name -> key of every entity the collection holds, read in batches (a query returns at most 16,384)."""
    stored: dict[str, str] = {}
    iterator = client.query_iterator(collection, batch_size=BATCH, filter="", output_fields=["name", "key"])
    while batch := iterator.next():
        stored.update((row["name"], row["key"]) for row in batch)
    iterator.close()
    return stored


def _count(client, collection: str) -> int:
    return int(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])


def expression(conditions: list[Condition], layout: list[dict]) -> str:
    """The Milvus boolean expression of a search's filters ("" for none), meaning what GalleryFilter.allowed does:
    text compared case-insensitively, numbers as numbers when the column and every value are numeric, a range only
    on a numeric column (GalleryFilter.check has already refused the rest with its sentence)."""
    fields = {field["column"]: field for field in layout}
    parts = []
    for condition in conditions:
        field = fields[condition.column]
        if condition.op in ("<", "<=", ">", ">="):
            bound = float(condition.values[0])
            parts.append(f"({field['set']} == true and {field['number']} {condition.op} {bound!r})")
            continue
        if field["number"] and all(is_number(v) for v in condition.values):
            numbers = ", ".join(repr(float(v)) for v in condition.values)
            found = f"({field['set']} == true and {field['number']} in [{numbers}])"
        else:
            texts = ", ".join(json.dumps(v.strip().lower()) for v in condition.values)
            found = f"({field['text']} in [{texts}])"
        parts.append(f"(not {found})" if condition.op in ("!=", "not in") else found)
    return " and ".join(parts)


class MilvusVectors:
    """The gallery's vectors in a Milvus collection, searched by the engine (pipeline/search/vectors.py)."""

    exact = True  # Milvus keeps every entity's raw vector beside any index

    def __init__(self, client, manifest: dict, names: list[str]):
        self.client, self.manifest, self.collection = client, manifest, manifest["collection"]
        self.names, self.row_of = names, {name: i for i, name in enumerate(names)}
        self.search_params = {"metric_type": "IP", "params": manifest.get("search", {})}

    @classmethod
    def open(cls, manifest: dict, paths: Paths, names: list[str]) -> MilvusVectors:
        """The collection a manifest names, checked to hold the gallery's count of entities."""
        from pymilvus.exceptions import MilvusException

        uri, collection = location(manifest["uri"], paths), manifest["collection"]
        client = connect(uri)
        try:
            if not client.has_collection(collection):
                raise PipelineError(f"Milvus at {uri} has no collection '{collection}'; run `dvc repro -f index` "
                                    f"to build it.")
            client.load_collection(collection)
            count = _count(client, collection)
            held = client.describe_collection(collection).get("properties", {}).get(VERSION_PROPERTY, "")
        except MilvusException as error:
            raise PipelineError(f"Milvus at {uri} could not open collection '{collection}': {_reason(error)}.") \
                from None
        if held != manifest.get("version", ""):
            client.close()
            raise PipelineError(f"the Milvus collection '{collection}' at {uri} holds index version "
                                f"{held or '(none)'}, not {manifest.get('version') or '(none)'} as {paths.index_dir} "
                                f"says (another `index` run synced it since); run `dvc repro -f index` to sync it.")
        if count != len(names):
            client.close()
            raise PipelineError(f"the Milvus collection '{collection}' at {uri} holds {count} entities, but the index "
                                f"at {paths.index_dir} lists {len(names)}; run `dvc repro -f index` to sync it.")
        return cls(client, manifest, names)

    def search(self, queries: np.ndarray, k: int, conditions: list[Condition]) -> tuple[np.ndarray, np.ndarray]:
        """The filters as Milvus's boolean expression (`expression`), evaluated by Milvus inside the search."""
        k = min(k, len(self.names))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        if not k:
            return scores, rows
        results = self.client.search(self.collection, data=np.asarray(queries, dtype=np.float32).tolist(), limit=k,
                                     filter=expression(conditions, self.manifest["fields"]), output_fields=["name"],
                                     search_params=self.search_params, anns_field="vector")
        for i, hits in enumerate(results):
            for j, hit in enumerate(hits):
                scores[i, j], rows[i, j] = hit["distance"], self.row_of.get(hit["entity"]["name"], -1)
        return scores, rows

    def close(self) -> None:
        self.client.close()

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        names = [self.names[row] for row in rows]
        found = {e["name"]: e["vector"] for e in self.client.get(self.collection, ids=names,
                                                                  output_fields=["name", "vector"])}
        return np.array([found[name] for name in names], dtype=np.float32)
