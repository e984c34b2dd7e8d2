"""The dependencies routes declare (FastAPI `Depends`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.service import ToplistService


def get_service(request: Request) -> ToplistService:
    return request.app.state.toplist


Service = Annotated[ToplistService, Depends(get_service)]
