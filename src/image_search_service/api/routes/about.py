"""``/api/v1/about``: whether this is the demo, and where each model stands."""

from __future__ import annotations

from fastapi import APIRouter, Request

from image_search_service.api.deps import ServicesDep
from image_search_service.api.routes import API_PREFIX
from image_search_service.services.search.schemas import AboutOut
from image_search_service.services.search.warmup import about as about_server

router = APIRouter(prefix=API_PREFIX, tags=["search"])


@router.get("/about", summary="The demo or not, and each model's state (warming up or ready)")
async def about(request: Request, services: ServicesDep) -> AboutOut:
    warmup = getattr(request.app.state, "warmup", None)
    return AboutOut.model_validate(about_server(services.ctx, warmup))
