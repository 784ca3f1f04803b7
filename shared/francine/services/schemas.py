"""Request bodies, defined once: these pydantic models validate the requests and produce
the schemas of the OpenAPI document, so that what the document declares valid is what
the api accepts.

Scenes belong to their producer. A producer exposes ``scene_model`` (a pydantic model)
or, until it has one, ``json_schema()``; either goes into the document as
``Scene_<name>``, and ``validate`` of the producer has the last word (cross-field rules,
such as a material that must exist, are stated in the schema's descriptions).

``check_json`` bounds what any body may hold, whatever its route: everything in a body
may be stored in Firestore, which takes integers of 64 bits, finite numbers, valid
UTF-8, map keys that are not empty nor ``__reserved__``, and 20 levels of nesting.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.json_schema import WithJsonSchema

from francine import producers
from francine.base import errors
from francine.domain import imaging, planning

INT64 = (-(1 << 63), (1 << 63) - 1)
MAX_DEPTH = 16
MAX_KEY_BYTES = 1500
RESERVED_KEY = re.compile(r"^__.*__$")
REF = "#/components/schemas/{model}"
SCENE_MARK = "x-francine-scene"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Until(Strict):
    noise: float = Field(gt=0, le=1, description="the target: the estimated relative "
                         "standard error of the image's mean, at or below which a tile "
                         "stops (over 99% of its pixels, near-black pixels aside)")
    max_passes: int = Field(256, ge=2, le=planning.MAX_PARALLEL,
                            description="the most passes any tile renders")


class Spending(Strict):
    max_cost_usd: float | None = Field(
        None, gt=0, le=1e6, description="a spending cap in USD: refused (400 over_cap) when "
        "the estimate alone exceeds it; a render that reaches it stops with the passes it "
        "finished (done, with stopped: 'budget')")
    max_cpu_seconds: float | None = Field(
        None, gt=0, le=1e9, description="the same cap in CPU-seconds of rendering")


class ExecutionRequest(Spending):
    parallel: int = Field(1, ge=1, le=planning.MAX_PARALLEL,
                          description="number of sample passes, each with its own seed")
    update: dict[str, Any] | None = Field(
        None, description="JSON Merge Patch (RFC 7386) of the scene; it persists for "
        "later executions")
    tile: int | None = Field(None, ge=planning.MIN_TILE, le=1 << 20,
                             description="edge of the square tiles one task renders "
                             "(default: chosen so that one task stays well inside the time "
                             "limit)")
    notify_url: str | None = Field(
        None, max_length=2048,
        description="an https:// URL (public addresses only) that receives one POST of the "
        "final status, signed with HMAC-SHA256 under the caller's secret (GET "
        "/v1/webhook-secret; header X-Francine-Signature: t=<unix time>,v1=<hex of "
        "HMAC(secret, '<t>.<body>')>)")
    frames: str | list[int] | None = Field(
        None, max_length=100_000, description="an animation (blender scenes): the frames to "
        "render, as a frame ('5'), a range ('1-250' or '1..250'), a comma list of them "
        "('1-3,10') or a list of frame numbers. One execution renders them all, each frame "
        "with its own tasks and image, the earliest first (GET .../frames, "
        ".../result?frame=N, .../video)")
    step: int | None = Field(None, ge=1, le=1_048_574,
                             description="render every step-th frame of each range of frames")
    on_frame_failure: Literal["continue", "stop"] = Field(
        "continue", description="a frame whose tasks failed beyond the failure budget: "
        "'continue' reports it and renders the others (the animation ends done unless no "
        "frame rendered); 'stop' cancels the rest and fails the animation")
    dry_run: bool = Field(False, description="answer 200 with the render's estimate (tasks, "
                          "CPU-seconds, wall time, cost in USD) and start nothing")
    notify_frames: bool = Field(False, description="also POST each frame's final status to "
                                "notify_url (by default only the animation's, once)")
    seed: int | None = Field(None, ge=0, le=planning.MAX_SEED, description="where the passes' "
                             "seeds come from (default: the execution's id): the same seed, "
                             "scene and passes give the same image, byte for byte")
    until: Until | None = Field(
        None, description="a noise target instead of a fixed number of passes: passes are "
        "rendered in waves (the first of `parallel` passes, default 8) until the target is "
        "met, tile by tile, or max_passes")


class ExtendRequest(Spending):
    passes: int | None = Field(None, ge=1, le=planning.MAX_PARALLEL,
                               description="passes to add after the last one")
    until: Until | None = Field(None, description="or: add passes in waves until this "
                                "noise target is met (max_passes counts every pass)")


class AttachRequest(Strict):
    name: str = Field(description="resource name: the file's relative path, any UTF-8 but "
                      "control characters, backslashes and '.'/'..' segments", max_length=512)
    url: str = Field(description="gs://bucket/object (a bucket an administrator allowed "
                     "for you) or https://host/path (public addresses only; no redirects)",
                     max_length=2048)


def scene_schema(producer) -> dict:
    model = getattr(producer, "scene_model", None)
    if model is not None:
        return model.model_json_schema(ref_template=REF)
    schema = dict(producer.json_schema())
    schema.pop("$schema", None)
    return schema


def _session_variant(name: str) -> type[BaseModel]:
    # pydantic resolves every $ref it sees: the reference to the producer's schema is
    # put in by _scene_refs.
    scene = Annotated[dict[str, Any] | None, WithJsonSchema({SCENE_MARK: name})]
    return create_model(
        f"SessionRequest_{name}", __base__=Strict,
        producer=(Literal[name], ...),  # type: ignore[valid-type]
        format=(Literal[tuple(sorted(imaging.FORMATS))], "png"),  # type: ignore[misc]
        scene=(scene, None))


def _session_adapter() -> TypeAdapter:
    variants = tuple(_session_variant(n) for n in producers.names())
    union = variants[0] if len(variants) == 1 else Union[variants]  # noqa: UP007
    return TypeAdapter(Annotated[union, Field(discriminator="producer")])


_adapters: dict[str, TypeAdapter] = {}


def _adapter(key: str) -> TypeAdapter:
    if key not in _adapters:
        _adapters[key] = (_session_adapter() if key == "session"
                          else TypeAdapter({"execution": ExecutionRequest,
                                            "extend": ExtendRequest,
                                            "attach": AttachRequest}[key]))
    return _adapters[key]


def parse(key: str, body: dict) -> dict:
    """``body`` validated by the model ``key`` (session, execution, extend, attach), as a dict
    with defaults filled in; a 400 naming the first bad field otherwise."""
    try:
        value = _adapter(key).validate_python(body)
    except ValidationError as e:
        tag = e.errors()[0]["type"] in ("union_tag_invalid", "union_tag_not_found")
        # An unknown producer is a scene nobody can render (the code clients know).
        raise errors.BadRequest(describe(e, body), "invalid_scene" if tag else "invalid_field") \
            from None
    return value.model_dump()


def describe(e: ValidationError, body: dict) -> str:
    first = e.errors(include_url=False)[0]
    loc = list(first["loc"])
    if loc and isinstance(body, dict) and loc[0] == body.get("producer") and len(loc) > 1:
        loc = loc[1:]  # the discriminated union's tag
    field = ".".join(str(p) for p in loc) or "body"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    elif first["type"] == "union_tag_invalid":
        field, message = "producer", f"one of {producers.names()}"
    elif first["type"] == "union_tag_not_found":
        field, message = "producer", "required, one of " + str(producers.names())
    return f"{field}: {message}"


def components() -> dict[str, dict]:
    """The request schemas for ``components/schemas`` of the OpenAPI document."""
    out: dict[str, dict] = {}
    for name, model in (("ExecutionRequest", ExecutionRequest),
                        ("ExtendRequest", ExtendRequest), ("AttachRequest", AttachRequest)):
        schema = model.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[name] = schema
    session = _scene_refs(_adapter("session").json_schema(ref_template=REF))
    out.update(session.pop("$defs", {}))
    out["SessionRequest"] = session
    for name in producers.names():
        out[f"Scene_{name}"] = scene_schema(producers.get(name))
    return out


def _scene_refs(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_scene_refs(x) for x in schema]
    if not isinstance(schema, dict):
        return schema
    if SCENE_MARK in schema:
        return {"anyOf": [{"$ref": REF.format(model=f"Scene_{schema[SCENE_MARK]}")},
                          {"type": "null"}],
                "description": "the scene (null or missing: the producer's default scene)"}
    return {k: _scene_refs(v) for k, v in schema.items()}


def check_json(value: Any, path: str = "body", depth: int = 0) -> None:
    """Refuse what Firestore cannot store, with the path of the offending value."""
    if depth > MAX_DEPTH:
        raise errors.BadRequest(f"{path}: nested deeper than {MAX_DEPTH} levels",
                                "invalid_field")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise errors.BadRequest(f"{path}: integers must fit in 64 bits", "invalid_field")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise errors.BadRequest(f"{path}: numbers must be finite", "invalid_field")
    elif isinstance(value, str):
        _utf8(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _utf8(key, f"{path} (a key)")
            if not key or RESERVED_KEY.match(key) or len(key.encode()) > MAX_KEY_BYTES:
                raise errors.BadRequest(
                    f"{path}: keys must be 1 to {MAX_KEY_BYTES} bytes and not __reserved__",
                    "invalid_field")
            check_json(item, f"{path}.{key}", depth + 1)


def _utf8(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.BadRequest(f"{path}: not valid Unicode (a lone surrogate)",
                                "invalid_field") from None
