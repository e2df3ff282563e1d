"""An upload that is no image is refused with the formats that are supported, in words
a person knows (issue 20), not the decoding library's name."""

from __future__ import annotations

from fastapi.testclient import TestClient

from image_search_service.images.loading import describe_formats


def test_a_file_that_is_no_image_is_refused_with_the_supported_formats(
    client: TestClient,
) -> None:
    response = client.post(
        "/api/v1/assets", files={"file": ("notes.jpg", b"just some text\n", "image/jpeg")}
    )
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert f"not a supported image file (supported: {describe_formats()})" in detail
    assert "JPEG" in detail
    assert "HEIC" in detail
    assert "Pillow" not in detail
