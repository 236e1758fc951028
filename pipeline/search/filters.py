"""Filters on the gallery's columns, as a shop narrows a search: `category = shoes`, `gender in (women, girls)`,
`price <= 40`, `colour != red`. Several filters all apply (and).

    column = value          column != value          (text or numbers; text compares case-insensitively)
    column in (a, b, ...)   column not in (a, b)
    column < n   column <= n   column > n   column >= n      (numeric columns only)

A column is numeric when every non-empty value in it is a number. The filters (a list of `Condition`) are what
every vector store is asked to search within (pipeline/search/vectors.py), each translating them itself: FAISS
into the set of gallery rows they allow (`GalleryFilter.allowed`, searched within by
pipeline/search/faiss_index.py: search_within), Milvus into its boolean expression (pipeline/search/milvus_index.py),
so k results come back whenever k items match, however rare they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

COMPARISONS = ("<=", ">=", "!=", "=", "<", ">")
WHERE = re.compile(r"^\s*(?P<column>[^=!<>]+?)\s+(?P<op>not\s+in|in)\s*\((?P<values>.*)\)\s*$"
                   r"|^\s*(?P<column2>[^=!<>]+?)\s*(?P<op2><=|>=|!=|=|<|>)\s*(?P<value>.*?)\s*$", re.IGNORECASE)
SYNTAX = "column = value, column != value, column in (a, b), column not in (a, b), or column <, <=, >, >= number"


@dataclass(frozen=True)
class Condition:
    """One filter: a column, an operator (=, !=, in, not in, <, <=, >, >=) and its values."""

    column: str
    op: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        if self.op in ("in", "not in"):
            return f"{self.column} {self.op} ({', '.join(self.values)})"
        return f"{self.column} {self.op} {self.values[0]}"


def parse_where(text: str) -> Condition:
    """A filter from its text; one sentence when it is not one."""
    match = WHERE.match(text or "")
    if match is None:
        raise PipelineError(f"the filter {text!r} is not one this search reads; write {SYNTAX}.")
    if match["column"] is not None:
        values = tuple(v.strip().strip("'\"") for v in match["values"].split(",") if v.strip())
        if not values:
            raise PipelineError(f"the filter {text!r} lists no values inside its parentheses.")
        return Condition(match["column"].strip(), " ".join(match["op"].lower().split()), values)
    value = match["value"].strip().strip("'\"")
    if not value:
        raise PipelineError(f"the filter {text!r} has no value after {match['op2']}.")
    return Condition(match["column2"].strip(), match["op2"], (value,))


def numeric_columns(table: pd.DataFrame) -> dict[str, pd.Series]:
    """The columns whose every non-empty value is a number, as numbers (empty cells NaN)."""
    numeric = {}
    for column in table.columns:
        values = table[column]
        if pd.api.types.is_numeric_dtype(values):
            numeric[column] = values.astype(float)
            continue
        text = values.astype(str).str.strip()
        parsed = pd.to_numeric(text.where(text != ""), errors="coerce")
        if (text != "").any() and parsed[text != ""].notna().all():
            numeric[column] = parsed
    return numeric


class GalleryFilter:
    """The filterable columns of a gallery (`table`: one row per gallery row) and the rows a set of filters allows."""

    def __init__(self, table: pd.DataFrame):
        self.table = table.reset_index(drop=True)
        self.numeric = numeric_columns(self.table)
        self.text = {c: self.table[c].astype(str).str.strip().str.lower() for c in self.table.columns}

    @property
    def columns(self) -> list[str]:
        return list(self.table.columns)

    def check(self, conditions: list[Condition]) -> None:
        """Refuse, in one sentence, a filter on an unknown column or a range that is not numeric on both sides."""
        for condition in conditions:
            if condition.column not in self.text:
                raise PipelineError(f"the filter '{condition}' names an unknown column '{condition.column}'; the "
                                    f"gallery's columns are: {', '.join(self.columns)}.")
            if condition.op not in ("<", "<=", ">", ">="):
                continue
            if condition.column not in self.numeric:
                raise PipelineError(f"the filter '{condition}' compares '{condition.column}', which holds text; use "
                                    f"=, !=, in or not in with it.")
            if not is_number(condition.values[0]):
                raise PipelineError(f"the filter '{condition}' compares with {condition.values[0]!r}, which is not "
                                    f"a number.")

    def allowed(self, conditions: list[Condition]) -> np.ndarray | None:
        """A boolean mask over the gallery's rows where every condition holds; None for no condition."""
        if not conditions:
            return None
        self.check(conditions)
        mask = np.ones(len(self.table), dtype=bool)
        for condition in conditions:
            mask &= self._holds(condition)
        return mask

    def _holds(self, condition: Condition) -> np.ndarray:
        if condition.op in ("<", "<=", ">", ">="):
            column, bound = self.numeric[condition.column], float(condition.values[0])
            compared = {"<": column < bound, "<=": column <= bound, ">": column > bound, ">=": column >= bound}
            return compared[condition.op].fillna(False).to_numpy(dtype=bool)
        if condition.column in self.numeric and all(is_number(v) for v in condition.values):
            column = self.numeric[condition.column]
            found = column.isin([float(v) for v in condition.values]).to_numpy()
        else:
            found = self.text[condition.column].isin([v.lower() for v in condition.values]).to_numpy()
        return ~found if condition.op in ("!=", "not in") else found


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
