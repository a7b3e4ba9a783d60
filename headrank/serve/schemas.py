"""The wire shapes: Cohere v1/v2 and Jina, TEI, the probes and the error bodies (pydantic models)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from headrank.results import VISIBLE, is_blank


class StrictRequest(BaseModel):
    """No coercion (0 is not false, "3" is not 3): the server accepts exactly what its schema declares."""

    model_config = ConfigDict(strict=True)


def unicode_text(value: str) -> str:
    """Valid JSON may carry a lone UTF-16 surrogate (JavaScript's JSON.stringify emits them): not text that a
    tokenizer, a log or a response can encode, so it is refused here with a plain message."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"holds a lone UTF-16 surrogate at character {err.start}: not valid Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(unicode_text)]


def blank_as_empty(text: str) -> str:
    """A text with nothing visible is the empty passage: a document of only invisible characters scores as one
    with no text at all, whichever of them it held."""
    return "" if is_blank(text) else text


class TextDocument(StrictRequest):
    text: Text
    title: Text | None = None


class FieldsDocument(TextDocument):
    """A v1 document object: `text`, an optional `title`, and any other fields, which `rank_fields` may name."""

    model_config = ConfigDict(extra="allow")


Query = Annotated[
    Text,
    Field(
        min_length=1,
        pattern=VISIBLE,
        description="the query; must hold a visible character (not only whitespace, control or zero-width ones)",
    ),
]
V1Document = Annotated[
    Annotated[Text, Tag("string")] | Annotated[FieldsDocument, Tag("object")],
    Discriminator(
        lambda value: "string" if isinstance(value, str) else "object" if isinstance(value, dict) else None,
        custom_error_type="document_type",
        custom_error_message="a document is a string or an object with a 'text' string",
    ),
]


def _whole_number(value):
    """JSON Schema's integer includes 3.0: take whole floats as ints (3.5 and "3" still fail, strictly)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]  # the bound first: the schema says it
TopN = Annotated[PositiveInt | None, Field(default=None, description="answer only the best n; all are scored")]
RawScores = Annotated[
    bool,
    Field(
        default=False,
        description="answer the raw attention scores instead of relevance in (0, 1) (the logistic of each score's "
        "distance from the list's mean in standard deviations: the ranking is kept)",
    ),
]


Relevance = Annotated[
    Literal["list", "calibrated"],
    Field(
        default="list",
        description="`list`: relevance_score is the logistic of each score's distance from the list's mean in "
        "standard deviations (relative to the list); `calibrated`: the ranker's calibrated P(relevant), "
        "comparable across queries and lists (the list-relative one when its artifact has no calibration.json: "
        "/health's ranker.calibrated says which). Both keep the ranking",
    ),
]


ReturnHighlights = Annotated[
    bool,
    Field(
        default=False,
        description="also answer each result's `highlights`: its sentences by the selected heads' attention, "
        "heaviest first, as {start, end, weight} character offsets into the text ranked (for a v1 document "
        "with a title or rank_fields: the fields joined by newlines). Costs one more pass",
    ),
]


class HighlightSpan(BaseModel):
    start: int
    end: int
    weight: float


class RerankRequest(StrictRequest):
    """Cohere v1 / Jina rerank request."""

    model: str | None = None
    query: Query
    documents: list[V1Document]
    top_n: TopN = None
    return_documents: bool = True
    raw_scores: RawScores = False
    relevance: Relevance = "list"
    return_highlights: ReturnHighlights = False
    rank_fields: list[Text] | None = Field(
        default=None,
        min_length=1,
        description="the fields of each document to rank on, their values joined by newlines in this order (a "
        "string document is its `text`; a field a document lacks is skipped; a value that is not a string is "
        "ranked as its JSON text). Default: `title` then `text`",
    )


class RerankRequestV2(StrictRequest):
    """Cohere v2 rerank request (`ClientV2.rerank`; its other fields, e.g. `priority`, are accepted and ignored)."""

    model: str | None = None
    query: Query
    documents: list[Text]
    top_n: TopN = None
    max_tokens_per_doc: PositiveInt | None = Field(default=None, description="cut each document to this many tokens")
    raw_scores: RawScores = False
    relevance: Relevance = "list"
    return_highlights: ReturnHighlights = False


class RerankResult(BaseModel):
    index: int
    """the document's position in the request's `documents`."""
    relevance_score: float
    document: TextDocument | None = None
    """the document as it was sent, as an object (a string document as its `text`); absent when the request
    set `return_documents` false."""
    highlights: list[HighlightSpan] | None = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    usage: dict[str, int]
    meta: dict


class RerankResultV2(BaseModel):
    index: int
    relevance_score: float
    highlights: list[HighlightSpan] | None = None


class RerankResponseV2(BaseModel):
    id: str
    results: list[RerankResultV2]
    model: str
    meta: dict


class TeiRequest(StrictRequest):
    """text-embeddings-inference rerank request (its other fields are accepted and ignored)."""

    query: Query
    texts: list[Text]
    return_text: bool = False
    raw_scores: RawScores = False
    relevance: Relevance = "list"
    return_highlights: ReturnHighlights = False
    truncate: bool = Field(
        default=True,
        description="false: answer 422 for a text longer than the ranker's passage limit, or a query longer than "
        "the server's query limit, instead of cutting it (TEI's own default is false; this server cuts unless told "
        "not to)",
    )
    truncation_direction: Literal["Right"] = Field(
        default="Right", description="a cut text keeps its beginning (TEI's `Left` is not supported)"
    )


class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None
    highlights: list[HighlightSpan] | None = None


class Health(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # the field notes below are the OpenAPI descriptions

    status: str
    model: str
    ranker: dict
    """what is served: base model, heads, layers run, training data (None: not a trained artifact)."""
    waiting: int
    active: int
    queue_size: int
    rss_mb: float | None = None
    """resident memory of the server process now (None where /proc is not there)."""
    peak_rss_mb: float
    """the highest resident memory of the server process since it started (not now)."""
    device_memory_mb: float | None = None
    """memory the model's accelerator holds now (None on a CPU)."""
    peak_device_memory_mb: float | None = None


NOT_READY = "not ready: the model is warming up (its first pass), or the server is shutting down"


class Ping(BaseModel):
    status: Literal["ok"] = "ok"


class ModelCard(BaseModel):
    """One served model, in OpenAI's `/v1/models` shape, with what headrank serves of it."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "headrank"
    ranker: dict
    artifact: dict | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """Every error but validation: bad JSON (400), a body too large (413), not JSON or not gzip (415), busy
    (429), client gone (499), out of memory or shutting down (503)."""

    detail: str


class ValidationErrorBody(BaseModel):
    """422: one readable line per problem in `detail`; in `errors`, each problem's type, location and message
    and an excerpt of the value that failed."""

    detail: str
    errors: list[dict] = Field(default_factory=list)


ERRORS = {
    400: {"model": ErrorBody, "description": "the body is not JSON (or nested too deeply, or not valid gzip)"},
    413: {"model": ErrorBody, "description": "the body is over the size limit (decoded, for a gzip body)"},
    415: {"model": ErrorBody, "description": "the body is not sent as application/json, or in an encoding but gzip"},
    422: {"model": ValidationErrorBody, "description": "the request does not validate"},
    429: {"model": ErrorBody, "description": "the queue is full; retry after the Retry-After header's seconds"},
    503: {
        "model": ErrorBody,
        "description": "out of device memory, or shutting down; retry after the Retry-After header's seconds",
    },
}
