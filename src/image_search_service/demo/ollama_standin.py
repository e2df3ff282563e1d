"""An Ollama stand-in: its embedding API (``/api/embed``, the older ``/api/embeddings``,
``/api/tags``) over deterministic word vectors, for the tests, the benchmark and a trial
of the caption space where no Ollama runs.

NOT a language model: a text's vector is the normalised sum of one fixed random vector
per word, after a small synonym table maps words that mean the same to one word. It
matches "xmas" to "Christmas" only because the table says so; the figures it gives
measure the protocol and the fusion, not nomic-embed-text.

It reproduces the real server's behaviours that matter to the service: a model that is
not pulled (404 ``model "x" not found, try pulling it first``), a first call that waits
while the model loads (held until :meth:`OllamaStandIn.finish_loading`), and a model of
another dimension.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

# Words that mean the same, as people write captions and queries.
SYNONYMS: dict[str, str] = {
    "xmas": "christmas",
    "noel": "christmas",
    "yuletide": "christmas",
    "shore": "seaside",
    "beach": "seaside",
    "coast": "seaside",
    "sea": "seaside",
    "car": "automobile",
    "auto": "automobile",
    "vehicle": "automobile",
    "puppy": "dog",
    "hound": "dog",
    "kitten": "cat",
    "ring": "circle",
    "round": "circle",
    "disc": "circle",
    "box": "square",
    "block": "square",
    "pyramid": "triangle",
    "plus": "cross",
    "crimson": "red",
    "scarlet": "red",
    "navy": "blue",
    "azure": "blue",
    "emerald": "green",
    "lime": "green",
    "golden": "yellow",
    "lemon": "yellow",
    "violet": "purple",
    "lilac": "purple",
    "tangerine": "orange",
    "ebony": "black",
    "ivory": "white",
    "snow": "white",
}
STOPWORDS = frozenset(
    "a an and the of with in on at to for by from or is are was this that it its my our "
    "photo picture image shape search_document search_query".split()
)
_WORD = re.compile(r"[a-z_]+")


def words(text: str) -> list[str]:
    found = (SYNONYMS.get(w, w) for w in _WORD.findall(text.lower()))
    return [w for w in found if w not in STOPWORDS]


def word_vector(word: str, dim: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
    vector: np.ndarray[Any, np.dtype[np.float64]] = np.random.default_rng(seed).normal(size=dim)
    return vector / np.linalg.norm(vector)


def embed(text: str, dim: int) -> list[float]:
    total = np.zeros(dim)
    for word in words(text):
        total += word_vector(word, dim)
    norm = float(np.linalg.norm(total))
    if norm == 0:  # no meaningful word: a fixed vector, as a real model gives something
        total, norm = word_vector("", dim), 1.0
    return [float(x) for x in total / norm]


class OllamaStandIn:
    """``with OllamaStandIn.running() as ollama:`` a server on a free loopback port;
    ``ollama.url`` is what OLLAMA_URL is set to."""

    def __init__(self, *, models: dict[str, int] | None = None, slow_first_call: bool = False):
        self.models = dict(models or {"nomic-embed-text": 768})  # pulled models -> dim
        self.requests: list[dict[str, Any]] = []  # every embedding request's JSON body
        self._loaded = threading.Event()
        if not slow_first_call:
            self._loaded.set()
        self.failing: int | None = None  # an HTTP status every request answers, if set
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def finish_loading(self) -> None:
        """Release the calls waiting for the model to load (a slow first call)."""
        self._loaded.set()

    @classmethod
    @contextmanager
    def running(cls, **kwargs: Any) -> Iterator[OllamaStandIn]:
        standin = cls(**kwargs)
        thread = threading.Thread(target=standin._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield standin
        finally:
            standin.finish_loading()
            standin._server.shutdown()
            standin._server.server_close()
            thread.join()

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.failing is not None:
            return self.failing, {"error": "stand-in told to fail"}
        if path == "/api/tags":
            return 200, {
                "models": [{"name": f"{m}:latest", "model": f"{m}:latest"} for m in self.models]
            }
        if path not in ("/api/embed", "/api/embeddings"):
            return 404, {"error": "404 page not found"}
        self.requests.append(body)
        name = str(body.get("model", "")).removesuffix(":latest")
        if name not in self.models:
            return 404, {"error": f'model "{name}" not found, try pulling it first'}
        self._loaded.wait()  # the first call loads the model; its caller may time out
        dim = self.models[name]
        if path == "/api/embeddings":  # the older one-text API
            return 200, {"embedding": embed(str(body.get("prompt", "")), dim)}
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else [str(t) for t in inputs]
        return 200, {"model": name, "embeddings": [embed(t, dim) for t in texts]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up waiting (a timeout)
                    pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._reply(*standin._answer(self.path, {}))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._reply(400, {"error": "invalid JSON"})
                    return
                self._reply(*standin._answer(self.path, body))

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler
