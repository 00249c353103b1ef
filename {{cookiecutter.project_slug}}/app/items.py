"""Items: the example resource. Copy this module to add your own.

It shows the patterns a resource needs: an ORM model, typed request and
response models, the session dependency, {% if cookiecutter.use_redis %}the cache, {% endif %}and 404/409/422
answered as JSON.
"""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, {{ "Request, " if cookiecutter.use_rate_limit else "" }}status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

{% if cookiecutter.use_redis %}
from app.cache import CacheDep
{% endif %}
from app.db import Base, SessionDep, StoredText
{% if cookiecutter.use_rate_limit %}
from app.ratelimit import limiter
{% endif %}

MAX_ID = 2**31 - 1
{% if cookiecutter.use_rate_limit %}
# An example of a route's own limit, tighter than RATE_LIMIT_DEFAULT: tune it.
CREATE_LIMIT = "10/minute"
{% endif %}


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ItemCreate(BaseModel):
    name: StoredText = Field(min_length=1, max_length=100)
    description: StoredText = Field(default="", max_length=1000)


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    created_at: datetime


class ItemPage(BaseModel):
    items: list[ItemRead]
    total: int
    limit: int
    offset: int


ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]

router = APIRouter(prefix="/items", tags=["items"])


@router.post("", status_code=status.HTTP_201_CREATED)
{% if cookiecutter.use_rate_limit %}
@limiter.limit(CREATE_LIMIT)
async def create_item(request: Request, payload: ItemCreate, session: SessionDep) -> ItemRead:
{% else %}
async def create_item(payload: ItemCreate, session: SessionDep) -> ItemRead:
{% endif %}
    item = Item(name=payload.name, description=payload.description)
    session.add(item)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "An item with this name exists") from None
    await session.refresh(item)
    return ItemRead.model_validate(item)


@router.get("")
async def list_items(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ItemPage:
    total = await session.scalar(select(func.count()).select_from(Item))
    rows = await session.scalars(select(Item).order_by(Item.id).limit(limit).offset(offset))
    return ItemPage(
        items=[ItemRead.model_validate(row) for row in rows],
        total=total or 0,
        limit=limit,
        offset=offset,
    )


@router.get("/{item_id}")
{% if cookiecutter.use_redis %}
async def get_item(item_id: ItemId, session: SessionDep, cache: CacheDep) -> ItemRead:
    key = f"items:{item_id}"
    cached = await cache.get(key)
    if cached is not None:
        return ItemRead.model_validate(cached)
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Item not found")
    result = ItemRead.model_validate(item)
    await cache.set(key, result.model_dump(mode="json"))
    return result
{% else %}
async def get_item(item_id: ItemId, session: SessionDep) -> ItemRead:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Item not found")
    return ItemRead.model_validate(item)
{% endif %}


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
{% if cookiecutter.use_redis %}
async def delete_item(item_id: ItemId, session: SessionDep, cache: CacheDep) -> None:
{% else %}
async def delete_item(item_id: ItemId, session: SessionDep) -> None:
{% endif %}
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Item not found")
    await session.delete(item)
{% if cookiecutter.use_redis %}
    # Commit before invalidating, so no concurrent read caches the deleted row again.
    await session.commit()
    await cache.delete(f"items:{item_id}")
{% endif %}
