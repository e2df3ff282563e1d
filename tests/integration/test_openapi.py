"""The OpenAPI document is true: a bounded schemathesis run against the real server
(uvicorn over HTTP, a small indexed library, tiny real models) finds no 5xx and no
response that breaks the schema; and the hand-checked points of issue 9."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from schemathesis.generation.case import Case

from image_search_service.api.serving import uvicorn_limits
from image_search_service.context import open_context
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.library.index import index_paths
from tests.integration.api_support import tiny_model_settings, write_library
from tests.integration.live_server import live_server

pytestmark = pytest.mark.slow

# Per operation and mode (valid and invalid input); about a dozen operations. Bounded:
# about half a minute on two shared cores (docs/security.md: the longer manual run).
MAX_EXAMPLES = 60
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    encoders: EncoderRegistry,
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("openapi")
    config = tiny_model_settings(tiny_models, root / "data", max_upload_bytes=200_000)
    write_library(root / "photos")
    ctx = open_context(config, encoders=encoders)
    try:
        index_paths(ctx, [root / "photos"], model_keys=["clip"])
    finally:
        ctx.close()
    with live_server(config, encoders=encoders, **uvicorn_limits(config)) as server:
        yield server.url


@pytest.fixture(scope="module")
def api_schema(base_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


def test_schemathesis_finds_no_server_error_or_schema_violation(api_schema: Any) -> None:
    # Driven through the library API rather than its pytest plugin (which does not
    # load under this pytest): every operation, a bounded number of cases each.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,  # the same cases every run: a failure here reproduces
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Case[Any]) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Unsatisfiable:  # no parameters: nothing invalid to send
            assert mode is GenerationMode.NEGATIVE
        except Exception as exc:  # collect every operation's failure, then report
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


class TestSchemaPoints:
    def test_422_bodies_are_the_error_body(self, base_url: str) -> None:
        document = httpx.get(f"{base_url}/openapi.json").json()
        assert "HTTPValidationError" not in document["components"]["schemas"]
        for path, item in document["paths"].items():
            for method, operation in item.items():
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")):
                        ref = response["content"]["application/json"]["schema"]["$ref"]
                        assert ref.endswith("/ErrorBody"), (method, path, status)
        real = httpx.get(f"{base_url}/api/v1/search", params={"limit": 0})
        assert real.status_code == 422
        assert set(real.json()) == {"error", "detail"}

    def test_405_allow_lists_every_method_of_the_path(self, base_url: str) -> None:
        any_id = "00000000-0000-4000-8000-000000000000"
        response = httpx.put(f"{base_url}/api/v1/assets/{any_id}")
        assert response.status_code == 405
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}
        response = httpx.put(f"{base_url}/api/v1/search")
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}

    @pytest.mark.parametrize("value", ["0.5", "1700000000", "-3", "1e9"])
    def test_numbers_are_not_dates(self, base_url: str, value: str) -> None:
        response = httpx.get(f"{base_url}/api/v1/search", params={"q": "x", "taken_before": value})
        assert response.status_code == 422
        assert "ISO 8601" in response.json()["detail"]

    def test_docs_and_redoc_load_nothing_from_another_host(self, base_url: str) -> None:
        for page in ("/docs", "/redoc"):
            html = httpx.get(f"{base_url}{page}").text
            assert "cdn." not in html
            assert "https://" not in html
            for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
                if asset in html:
                    url = html.split(asset)[0].rsplit('"', 1)[-1] + asset
                    fetched = httpx.get(f"{base_url}{url}")
                    assert fetched.status_code == 200
                    assert len(fetched.content) > 100_000
