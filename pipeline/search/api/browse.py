"""What the page browses besides search: the filterable columns, the gallery, the validation queries as `evaluate`
ranked them (failures first), and each val recall in context."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Query as QueryParameter

from pipeline.evaluation.context import SMALL_CHANCE_R10
from pipeline.evaluation.protocols import TOP
from pipeline.search.api.answers import (
    Filters,
    GalleryImage,
    GalleryPage,
    NumberColumn,
    RankedImage,
    Recall,
    TextColumn,
    Unavailable,
    ValQueries,
    ValQuery,
)
from pipeline.search.api.deps import EngineDep, ServingDep
from pipeline.search.api.errors import ANY_FAILURE, BAD_REQUEST, ApiError
from pipeline.search.engine import SearchEngine

router = APIRouter(responses={**BAD_REQUEST, **ANY_FAILURE})


@router.get("/api/filters")
def filters(engine: EngineDep) -> Filters:
    """The columns a search can filter on, with their values (text) or range (numbers)."""
    columns: dict[str, NumberColumn | TextColumn] = {}
    for column in engine.filter.columns:
        if column in engine.filter.numeric:
            values = engine.filter.numeric[column].dropna()
            columns[column] = NumberColumn(kind="number", min=float(values.min()), max=float(values.max()))
        else:
            counts = engine.filter.table[column].astype(str).str.strip()
            counts = counts[counts != ""].value_counts()
            columns[column] = TextColumn(kind="text", values=counts.index[:200].tolist())
    return Filters(columns=columns)


@router.get("/api/gallery")
def gallery(engine: EngineDep, category: str = "", q: str = "", offset: Annotated[int, QueryParameter(ge=0)] = 0,
            limit: Annotated[int, QueryParameter(ge=1, le=200)] = 48) -> GalleryPage:
    """The gallery, filtered by category and by q (a substring of name or caption, or a name the image is known
    by), and paged."""
    categories = engine.category_names
    if category and category not in categories:
        raise ApiError(400, f"unknown category {category[:40]!r}; the gallery has {', '.join(categories)}.")
    table = engine.gallery
    if category:
        table = table[table["category"] == category]
    if q.strip():
        needle, named = q.strip().lower(), engine.resolve(q.strip(), files=False)  # a file name or path finds it
        table = table[table["name"].str.lower().str.contains(needle, regex=False, na=False)
                      | table["caption"].str.lower().str.contains(needle, regex=False, na=False)
                      | (table["name"] == named)]
    page = table.iloc[offset:offset + limit]
    items = [GalleryImage(**record) for record in page[["name", "category", "split", "caption"]].to_dict("records")]
    return GalleryPage(total=len(table), offset=offset, limit=limit, categories=categories, items=items)


@router.get("/api/queries")
def queries(state: ServingDep, engine: EngineDep, category: str = "",
            offset: Annotated[int, QueryParameter(ge=0)] = 0,
            limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20) -> ValQueries | Unavailable:
    """The val queries as `evaluate` ranked them, failures first, with each one's top results."""
    table = state.rankings.load()
    if table is None:
        return Unavailable(message=f"There are no validation rankings yet ({state.paths.val_rankings} is missing): "
                                   f"run `dvc repro` to train and evaluate the model.")
    known = sorted(table["category"].unique().tolist())
    if category and category not in known:
        raise ApiError(400, f"unknown category {category[:40]!r}; the validation queries have {', '.join(known)}.")
    if category:
        table = table[table["category"] == category]
    ranks = table["target_rank"]
    return ValQueries(total=len(table), failures=int((~ranks.between(1, TOP)).sum()), offset=offset, limit=limit,
                      categories=known,
                      items=[val_query(row, engine) for row in table.iloc[offset:offset + limit].itertuples()])


def val_query(row: Any, engine: SearchEngine) -> ValQuery:
    """One val query as the page draws it: its texts, rank, and top results with their categories."""
    category_of = engine.gallery["category"]
    top = [RankedImage(name=str(name), score=float(score),
                       category=str(category_of.iat[engine.row_of[name]]) if name in engine.row_of else "")
           for name, score in zip(row.top, row.scores, strict=True)]
    return ValQuery(triplet_id=str(row.triplet_id), category=str(row.category), source=str(row.source),
                    reference=str(row.reference), target=str(row.target), caption1=str(row.caption1),
                    caption2=str(row.caption2), query_text=str(row.query_text), target_rank=int(row.target_rank),
                    hit=1 <= int(row.target_rank) <= TOP, top=top)


@router.get("/api/recall")
def recall(state: ServingDep) -> Recall | Unavailable:
    """metrics/eval_context.json: each val recall beside its gallery size, chance level and the stage-1 model's."""
    context = state.paths.eval_context
    if not context.is_file():
        return Unavailable(message=f"There is no evaluation yet ({context} is missing): run `dvc repro` to train "
                                   f"and evaluate the model.")
    return Recall(small_chance_r10=SMALL_CHANCE_R10, context=json.loads(context.read_text()))
