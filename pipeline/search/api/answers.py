"""The typed answers of the JSON API: what each route returns, as pydantic models, so /openapi.json describes them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from pipeline.search.engine import Answer

SCORE = ("cosine similarity of the query's feature and the image's (both of unit length), from -1 to 1, higher is "
         "closer. It ranks the images of one query; it is not a probability, and a threshold does not mean the "
         "same across models, query kinds (composed, text, image) or categories.")


class ErrorAnswer(BaseModel):
    error: str = Field(description="one sentence saying what was wrong with the request")


class SearchHit(BaseModel):
    rank: int
    name: str
    category: str
    score: float = Field(description=SCORE)


class SearchAnswer(BaseModel):
    kind: Literal["composed", "text", "image"]
    reference: str = Field(description="the gallery name, or 'upload'; '' for a text query")
    text: str
    query_text: str = Field(description="what the text tower read (the text, after the reference's caption where "
                                        "the model was trained so)")
    filters: list[str] = Field(description="every filter applied, the reference's category included")
    k: int
    milliseconds: float = Field(description="time to answer the batch this query was answered in")
    version: str = Field(description="the index version that answered (every hit is from it)")
    hits: list[SearchHit]

    @classmethod
    def of(cls, answer: Answer, k: int) -> SearchAnswer:
        hits = [SearchHit(rank=h.rank, name=h.name, category=h.category, score=h.score) for h in answer.hits]
        return cls(kind=answer.kind, reference=answer.reference, text=answer.text, query_text=answer.query_text,
                   filters=answer.filters, k=k, milliseconds=round(answer.milliseconds, 1), version=answer.version,
                   hits=hits)


class Batching(BaseModel):
    answered: int = Field(description="batches answered so far")
    queries: int = Field(description="queries answered in them")
    largest: int = Field(description="the most queries one batch held")


class Health(BaseModel):
    status: Literal["ok"]
    version: str = Field(description="the index version served")
    serving_since: str = Field(description="when that version was swapped in (or the server started), ISO 8601 UTC")
    swaps: int = Field(description="index versions swapped in without a restart")
    images: int = Field(description="images in the served gallery")
    rankings: bool = Field(description="whether the validation rankings exist (/api/queries)")
    max_upload_bytes: int
    max_pixels: int
    batches: Batching


class Ready(BaseModel):
    ready: Literal[True]
    version: str


class NumberColumn(BaseModel):
    kind: Literal["number"]
    min: float
    max: float


class TextColumn(BaseModel):
    kind: Literal["text"]
    values: list[str] = Field(description="its values, most common first, at most 200")


class Filters(BaseModel):
    columns: dict[str, Annotated[NumberColumn | TextColumn, Field(discriminator="kind")]]


class GalleryImage(BaseModel):
    name: str
    category: str
    split: str
    caption: str


class GalleryPage(BaseModel):
    total: int = Field(description="images matching the filters, on every page")
    offset: int
    limit: int
    categories: list[str] = Field(description="every category of the gallery")
    items: list[GalleryImage]


class Unavailable(BaseModel):
    """What a listing answers before `dvc repro` has written what it lists."""

    available: Literal[False] = False
    message: str = Field(description="what is missing and what to run")


class RankedImage(BaseModel):
    name: str
    score: float
    category: str = Field(description="'' for an image no longer in the served gallery")


class ValQuery(BaseModel):
    triplet_id: str
    category: str
    source: str
    reference: str
    target: str
    caption1: str
    caption2: str
    query_text: str
    target_rank: int = Field(description="the target's 1-based rank; 0 where it cannot be ranked")
    hit: bool = Field(description="whether the target is in the top")
    top: list[RankedImage]


class ValQueries(BaseModel):
    available: Literal[True] = True
    total: int
    failures: int = Field(description="queries whose target is not in the top")
    offset: int
    limit: int
    categories: list[str]
    items: list[ValQuery]


class Recall(BaseModel):
    available: Literal[True] = True
    small_chance_r10: float = Field(description="the chance R@10 from which a category's recall says little")
    context: dict[str, Any] = Field(description="metrics/eval_context.json as `evaluate` wrote it "
                                                "(pipeline/evaluation/context.py)")
