"""`GET /`: what this service is, and where its docs are."""

from fastapi import APIRouter
from pydantic import BaseModel

from app import __version__
from app.deps import SettingsDep
from app.paths import DOCS_PATH


class ServiceInfo(BaseModel):
    service: str
    version: str
    docs: str | None


router = APIRouter(tags=["meta"])


@router.get("/")
async def service_info(settings: SettingsDep) -> ServiceInfo:
    return ServiceInfo(
        service=settings.service_name,
        version=__version__,
        docs=DOCS_PATH if settings.serve_docs else None,
    )
