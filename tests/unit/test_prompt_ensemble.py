"""Prompt ensembles: a query's text vector as the normalised mean of its templates'
embeddings, on the real tiny demo-style model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from image_search_service.context import open_context
from image_search_service.encoders.registry import EncoderRegistry
from image_search_service.services.search.service import SearchService, prompt_templates

TEMPLATES = "a photo of {}.|a drawing of a {}|{}, close up"


def test_templates_are_split_and_must_hold_the_query(make_settings: Any) -> None:
    settings = make_settings(siglip_prompt_templates=TEMPLATES)
    assert prompt_templates(settings, "siglip") == [
        "a photo of {}.",
        "a drawing of a {}",
        "{}, close up",
    ]
    assert prompt_templates(settings, "clip") == []  # per model
    with pytest.raises(ValidationError, match="must contain"):
        make_settings(clip_prompt_templates="a photo of a dog")


@pytest.mark.parametrize("model", ["clip", "siglip"])
def test_the_query_vector_is_the_normalised_mean_of_the_templates(
    make_settings: Any, encoders: EncoderRegistry, model: str
) -> None:
    settings = make_settings(**{f"{model}_prompt_templates": TEMPLATES})
    ctx = open_context(settings, encoders=encoders)
    try:
        encoder = ctx.encoder(model)  # type: ignore[arg-type]
        vector = SearchService(ctx).text_vector(encoder, model, "red circle")  # type: ignore[arg-type]
        prompts = ["a photo of red circle.", "a drawing of a red circle", "red circle, close up"]
        each = encoder.encode_text(prompts)
        each = each / np.linalg.norm(each, axis=1, keepdims=True)
        mean = each.mean(axis=0)
        np.testing.assert_allclose(vector, mean / np.linalg.norm(mean), atol=1e-5)
        plain = encoder.encode_text(["red circle"])[0]
        assert not np.allclose(vector, plain / np.linalg.norm(plain), atol=1e-3)
    finally:
        ctx.close()


def test_without_templates_the_query_is_embedded_as_written(ctx: Any) -> None:
    encoder = ctx.encoder("clip")
    vector = SearchService(ctx).text_vector(encoder, "clip", "red circle")
    np.testing.assert_allclose(vector, encoder.encode_text(["red circle"])[0], atol=1e-6)
