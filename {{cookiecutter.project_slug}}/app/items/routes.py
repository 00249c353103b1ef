"""The endpoints of /items: 201, 404, 409 and 422 as JSON.

Routes that write take `SessionDep`, whose transaction commits after the endpoint
returns and before the response is sent: endpoints never commit themselves.
Routes that only read take `ReadSessionDep`, which runs each query on its own.
"""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, {{ "Request, " if cookiecutter.use_rate_limit else "" }}status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

{% if cookiecutter.use_redis %}
from app.db import after_commit
{% endif %}
from app.deps import {{ "CacheDep, DatabaseDep, " if cookiecutter.use_redis else "" }}{{ "JobsDep, " if cookiecutter.use_worker else "" }}ReadSessionDep, SessionDep{{ ", requires" if cookiecutter.use_auth else "" }}
from app.items.models import Item
from app.items.schemas import ItemCreate, ItemPage, ItemRead
{% if cookiecutter.use_rate_limit %}
from app.ratelimit import limiter
{% endif %}

MAX_ID = 2**31 - 1
{% if cookiecutter.use_rate_limit %}
# A route's own limit, tighter than RATE_LIMIT_DEFAULT: tune it.
CREATE_LIMIT = "10/minute"
{% endif %}

ItemId = Annotated[int, Path(ge=1, le=MAX_ID)]
{% if cookiecutter.use_auth %}
# Reads are public; writes need a user's token or an API key with this scope.
CAN_WRITE = [requires("write")]
{% endif %}

router = APIRouter(prefix="/items", tags=["items"])


@router.post("", status_code=status.HTTP_201_CREATED{{ ", dependencies=CAN_WRITE" if cookiecutter.use_auth else "" }})
{% if cookiecutter.use_rate_limit %}
@limiter.limit(CREATE_LIMIT)
# slowapi's decorator requires the `request` parameter.
{% if cookiecutter.use_worker %}
async def create_item(
    request: Request, payload: ItemCreate, session: SessionDep, jobs: JobsDep
) -> ItemRead:
{% else %}
async def create_item(request: Request, payload: ItemCreate, session: SessionDep) -> ItemRead:
{% endif %}
{% else %}
async def create_item(payload: ItemCreate, session: SessionDep{{ ", jobs: JobsDep" if cookiecutter.use_worker else "" }}) -> ItemRead:
{% endif %}
    item = Item(name=payload.name, description=payload.description)
    session.add(item)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "An item with this name exists") from None
{% if cookiecutter.use_worker %}
    # Queued once the row is committed, so the task finds it.
    after_commit(session, lambda: jobs.enqueue("item_created", item_id=item.id))
{% endif %}
    # The INSERT returned what the database filled in (SQLAlchemy's eager defaults).
    return ItemRead.model_validate(item)


@router.get("")
async def list_items(
    session: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ItemPage:
    # The total rides on each row (a window over every match): one query, not two.
    page = (
        await session.execute(
            select(Item, func.count().over()).order_by(Item.id).limit(limit).offset(offset)
        )
    ).all()
    if page:
        total = page[0][1]
    else:  # Past the last page: no row carries the total.
        total = await session.scalar(select(func.count()).select_from(Item)) or 0
    return ItemPage(
        items=[ItemRead.model_validate(item) for item, _ in page],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{item_id}")
{% if cookiecutter.use_redis %}
async def get_item(item_id: ItemId, database: DatabaseDep, cache: CacheDep) -> ItemRead:
    key = f"items:{item_id}"
    cached = await cache.get(key)
    if cached is not None:
        return ItemRead.model_validate(cached)
    # Only a miss needs a session: a cache hit then costs a fifth less.
    async with database.read_sessionmaker() as session:
        item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Item not found")
    result = ItemRead.model_validate(item)
    await cache.set(key, result.model_dump(mode="json"))
    return result
{% else %}
async def get_item(item_id: ItemId, session: ReadSessionDep) -> ItemRead:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Item not found")
    return ItemRead.model_validate(item)
{% endif %}


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT{{ ", dependencies=CAN_WRITE" if cookiecutter.use_auth else "" }})
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
    # After the commit, so no concurrent read caches the deleted row again.
    after_commit(session, lambda: cache.delete(f"items:{item_id}"))
{% endif %}
