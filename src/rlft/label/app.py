"""The ranking web app (FastAPI). `create_app(db_path, token)` builds it; `rlft label serve` runs it.

Routes (all behind the access token, see security.py):
- ``GET /``: the page (a shell; data comes from the API and is rendered with textContent).
- ``GET /api/next?annotator=NAME``: the next prompt this annotator has not decided, its responses
  shuffled deterministically per (annotator, prompt), each with its original index; and progress.
- ``POST /api/rank`` ``{"prompt_id", "annotator", "ranking"}`` and ``POST /api/skip``
  ``{"prompt_id", "annotator"}``: need the X-CSRF-Token header. 200 after the commit; 409 when
  this annotator already ranked or skipped the prompt (decisions are final, not replaced);
  422 for an invalid ranking, unknown prompt id or bad annotator name.
- ``/static/*``: files from the package's static directory only.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from rlft.label.agreement import RankingError, validate_ranking
from rlft.label.db import AlreadyDecided, Item, LabelStore, UnknownPrompt
from rlft.label.security import MAX_BODY_BYTES, BodySizeLimit, CsrfSigner, SecurityHeaders, TokenAuth

HERE = Path(__file__).parent
MAX_NAME_CHARS = 64


class SkipIn(BaseModel):
    prompt_id: str
    annotator: str


class RankIn(SkipIn):
    ranking: list[Any]


def clean_annotator(name: str) -> str:
    """Strip and check an annotator name (1..64 printable characters); 422 otherwise."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise HTTPException(422, f"annotator name must be 1..{MAX_NAME_CHARS} printable characters")
    return name


def display_order(annotator: str, prompt_id: str, k: int) -> list[int]:
    """A shuffle of 0..k-1 fixed per (annotator, prompt): stable across reloads, different
    between annotators, so position bias averages out."""
    seed = hashlib.sha256(f"{annotator}\x00{prompt_id}".encode()).digest()
    order = list(range(k))
    random.Random(seed).shuffle(order)
    return order


def item_payload(item: Item, annotator: str) -> dict[str, Any]:
    order = display_order(annotator, item.id, len(item.responses))
    return {
        "id": item.id,
        "prompt": item.prompt,
        "responses": [{"index": i, "text": item.responses[i]} for i in order],
    }


def template_env() -> Environment:
    """Jinja2 with autoescape on for every template: data can never become markup."""
    return Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)


def create_app(db_path: str | Path, token: str, max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """The ASGI app: FastAPI routes wrapped in header, token and body-size middleware."""
    store = LabelStore(db_path)
    csrf = CsrfSigner(token)
    env = template_env()
    api = FastAPI(title="rlft label", docs_url=None, redoc_url=None, openapi_url=None)
    api.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def require_csrf(request: Request) -> None:
        sent = request.headers.get("x-csrf-token")
        if not csrf.check(sent, request.cookies.get(csrf.cookie_name)):
            raise HTTPException(403, "missing or invalid CSRF token; reload the page")

    @api.get("/", response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        nonce, csrf_token = csrf.issue(request.cookies.get(csrf.cookie_name))
        html = env.get_template("index.html").render(csrf_token=csrf_token, total=len(store.prompt_ids()))
        response = HTMLResponse(html)
        response.set_cookie(csrf.cookie_name, nonce, httponly=True, samesite="strict", path="/")
        return response

    @api.get("/api/next")
    def next_item(annotator: str = Query(...)) -> dict[str, Any]:
        name = clean_annotator(annotator)
        item = store.next_item(name)
        payload = None if item is None else item_payload(item, name)
        return {"done": item is None, "item": payload, "progress": store.progress(name)}

    def decide(prompt_id: str, annotator: str, ranking: list[Any] | None) -> JSONResponse:
        name = clean_annotator(annotator)
        item = store.get_item(prompt_id)
        if item is None:
            raise HTTPException(422, f"unknown prompt id {prompt_id!r}")
        if ranking is not None:
            try:
                ranking = validate_ranking(ranking, len(item.responses))
            except RankingError as e:
                raise HTTPException(422, f"invalid ranking: {e}") from None
        try:
            created_at = store.submit(prompt_id, name, ranking)
        except UnknownPrompt:
            raise HTTPException(422, f"unknown prompt id {prompt_id!r}") from None
        except AlreadyDecided as e:
            raise HTTPException(409, str(e)) from None
        body = {"ok": True, "ranking": ranking, "created_at": created_at, "progress": store.progress(name)}
        return JSONResponse(body)

    async def read_body(request: Request, model: type[SkipIn]) -> Any:
        """CSRF first (403), then the JSON body against `model` (422 with the field errors)."""
        require_csrf(request)
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(422, "request body must be JSON") from None
        try:
            return model.model_validate(data)
        except ValidationError as e:
            errors = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise HTTPException(422, f"invalid submission: {errors}") from None

    @api.post("/api/rank")
    async def rank(request: Request) -> JSONResponse:
        body = await read_body(request, RankIn)
        return await run_in_threadpool(decide, body.prompt_id, body.annotator, body.ranking)

    @api.post("/api/skip")
    async def skip(request: Request) -> JSONResponse:
        body = await read_body(request, SkipIn)
        return await run_in_threadpool(decide, body.prompt_id, body.annotator, None)

    app = BodySizeLimit(api, max_body_bytes)
    app = TokenAuth(app, token)
    return SecurityHeaders(app)
