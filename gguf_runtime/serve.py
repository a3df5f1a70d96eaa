"""A local chat server: llama-cpp-python's own OpenAI-compatible server, plus a chat page at ``/``.

The HTTP stack is llama_cpp.server (FastAPI + uvicorn). What this module adds: packed files (decoded
into memory through the same path as ``Model``), the model's file name as its id, requests queued
rather than interrupting each other, checks that answer bad requests with a 4xx JSON error before
they reach the model (malformed JSON, an unknown model, a negative max_tokens), and the page.
"""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from gguf_tools.errors import InputError, ResourceError
from gguf_tools.system import check_threads

from .llama_load import llama_source

CHECKED_PATHS = ("/v1/chat/completions", "/v1/completions")
MAX_BODY_BYTES = 32 * 2**20


def page_html() -> str:
    """The chat page: one file, no external resources, so it works offline."""
    return resources.files("gguf_runtime").joinpath("chat_page.html").read_text(encoding="utf-8")


def _error(status: int, message: str, code: str, param: str | None = None) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return status, json.dumps(body).encode()


def check_request(body: bytes, model_id: str) -> tuple[int, bytes] | None:
    """(status, JSON error) for a request the model should never see; None when it may go on."""
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"request body over {MAX_BODY_BYTES >> 20} MiB", "request_too_large")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return _error(400, f"malformed JSON: {e}", "invalid_json")
    if not isinstance(doc, dict):
        return _error(400, "the request body must be a JSON object", "invalid_json")
    model = doc.get("model")
    if model is not None and model != model_id:
        return _error(404, f"model {model!r} does not exist; this server has {model_id!r}", "model_not_found", "model")
    max_tokens = doc.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        return _error(400, f"max_tokens must be a positive integer, not {max_tokens!r}", "invalid_value", "max_tokens")
    return None


class RequestChecks:
    """ASGI middleware: reads a completion request's body, answers bad ones itself, replays good ones."""

    def __init__(self, app, model_id: str):
        self.app, self.model_id = app, model_id

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in CHECKED_PATHS:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, chunks)) > MAX_BODY_BYTES:
                break
        body = b"".join(chunks)
        problem = check_request(body, self.model_id)
        if problem is not None:
            status, payload = problem
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(payload)).encode())]})
            await send({"type": "http.response.body", "body": payload})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(model_path: str, model_id: str, *, n_ctx: int, threads: int, api_key: str | None):
    """The FastAPI app of llama_cpp.server over one model, with the checks and the page."""
    try:
        from fastapi.responses import HTMLResponse, JSONResponse
        from llama_cpp.server.app import create_app as llama_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as e:
        raise ResourceError(f"the server needs llama-cpp-python's server extras ({e.name} is missing):"
                            " pip install 'gguf-tools[run]'") from None
    server = ServerSettings(api_key=api_key, interrupt_requests=False)
    model = ModelSettings(model=model_path, model_alias=model_id, n_ctx=n_ctx, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    try:
        app = llama_app(server_settings=server, model_settings=[model])
    except ValueError as e:
        raise InputError(f"{model_id}: llama.cpp cannot load this model ({e})") from None

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html())

    @app.get("/info", include_in_schema=False)
    def info() -> JSONResponse:
        return JSONResponse({"model": model_id, "n_ctx": n_ctx})

    app.add_middleware(RequestChecks, model_id=model_id)
    return app


def serve(path: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8080, n_ctx: int = 4096,
          threads: int | None = None, api_key: str | None = None) -> None:
    """Serve a plain or packed GGUF file until Ctrl-C. A packed file is decoded into memory first."""
    import uvicorn

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    threads = check_threads(threads)
    with llama_source(path, threads=threads) as source:
        if source.ready is not None:
            source.ready()
        app = create_app(source.path, path.name, n_ctx=n_ctx, threads=threads, api_key=api_key)
        uvicorn.run(app, host=host, port=port, log_level="warning")
