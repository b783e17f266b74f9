"""What every management route shares at the edge: the error body and the bounds of an id.

Errors are translated once (`app/server.py`) to `{"detail", "code"}`; FastAPI's own request
validation answers 422 with a list of problems as `detail`. Both are documented on every
route, so the OpenAPI schema describes what a client really receives.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, Field

# Ids are 64-bit integers in the database: a larger one is a client's mistake (422), not a 500.
MAX_ID = 2**63 - 1


def _not_a_bool(value: Any) -> Any:
    if isinstance(value, bool):  # `false` is not teacher 0, nor a temperature of 0
        raise ValueError("a number, not true or false")
    return value


NotABool = BeforeValidator(_not_a_bool)  # for numbers: Pydantic would take true as 1
Id = Annotated[int, NotABool, Field(ge=0, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=0, le=MAX_ID)]


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]] = Field(description="what went wrong, or the invalid fields")
    code: str | None = Field(None, description="invalid_input, not_found, conflict, too_large, ...")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in (
        (400, "a body that cannot be parsed (not JSON, broken multipart)"),
        (401, "no or a wrong API key"),
        (404, "no such resource"),
        (409, "conflicts with what exists"),
        (410, "the session has ended"),
        (413, "the upload is too large"),
        (422, "invalid input"),
        (429, "too many sessions or turns: try later or another box"),
        (503, "an engine or TURN is unavailable"),
    )
}
