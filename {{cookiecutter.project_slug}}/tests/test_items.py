import asyncio

import httpx
{% if cookiecutter.use_redis %}
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.settings import Settings
{% if cookiecutter.use_auth %}
from tests.auth import writer_headers
{% endif %}
from tests.support import client_for
{% endif %}


async def create(client: httpx.AsyncClient, name: str, description: str = "") -> dict[str, object]:
    response = await client.post("/items", json={"name": name, "description": description})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_create_then_read_sees_the_write(client: httpx.AsyncClient) -> None:
    created = await create(client, "first", "a description")

    response = await client.get(f"/items/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert created["name"] == "first"
    assert created["description"] == "a description"


async def test_concurrent_writes_are_all_visible(client: httpx.AsyncClient) -> None:
    await asyncio.gather(*(create(client, f"item-{n}") for n in range(10)))

    response = await client.get("/items", params={"limit": 100})

    assert response.json()["total"] == 10


async def test_list_paginates_in_id_order(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await create(client, f"item-{n}")

    response = await client.get("/items", params={"limit": 2, "offset": 2})

    body = response.json()
    assert body["total"] == 5
    assert (body["limit"], body["offset"]) == (2, 2)
    assert [item["name"] for item in body["items"]] == ["item-2", "item-3"]


async def test_a_page_past_the_end_still_counts_every_item(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create(client, f"item-{n}")

    body = (await client.get("/items", params={"offset": 10})).json()

    assert body["items"] == []
    assert body["total"] == 3


async def test_duplicate_name_is_a_conflict(client: httpx.AsyncClient) -> None:
    await create(client, "unique")

    response = await client.post("/items", json={"name": "unique"})

    assert response.status_code == 409
    assert response.json() == {"detail": "An item with this name exists"}
    # The failed insert left the session usable for the next request.
    assert (await client.get("/items")).json()["total"] == 1


async def test_missing_item_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/12345")

    assert response.status_code == 404
    assert response.json() == {"detail": "Item not found"}


async def test_delete_removes_the_item(client: httpx.AsyncClient) -> None:
    created = await create(client, "doomed")
    await client.get(f"/items/{created['id']}")

    deleted = await client.delete(f"/items/{created['id']}")

    assert deleted.status_code == 204
    assert (await client.get(f"/items/{created['id']}")).status_code == 404
    assert (await client.delete(f"/items/{created['id']}")).status_code == 404
{% if cookiecutter.use_redis %}


async def test_a_deleted_item_is_not_served_from_the_cache(client: httpx.AsyncClient) -> None:
    created = await create(client, "cached-then-deleted")
    assert (await client.get(f"/items/{created['id']}")).status_code == 200

    await client.delete(f"/items/{created['id']}")

    assert (await client.get(f"/items/{created['id']}")).status_code == 404
{% endif %}


async def test_invalid_input_is_422_json(client: httpx.AsyncClient) -> None:
    cases = [
        client.post("/items", json={"name": ""}),
        client.post("/items", json={"name": "x" * 101}),
        client.post("/items", json={"name": 5}),
        client.post("/items", json={}),
        client.post("/items", content=b'{"name": ', headers={"content-type": "application/json"}),
        client.get("/items", params={"limit": 0}),
        client.get("/items", params={"limit": 101}),
        client.get("/items", params={"offset": -1}),
        client.get("/items/not-a-number"),
        client.get("/items/0"),
        client.get(f"/items/{2**63}"),
    ]
    for response in await asyncio.gather(*cases):
        assert response.status_code == 422, (response.request.url, response.text)
        assert response.json()["detail"]


async def test_text_the_database_cannot_store_is_422(client: httpx.AsyncClient) -> None:
    # Raw JSON: a NUL character, a lone surrogate, and numbers JSON has no word for.
    bodies = [
        '{"name": "nul\\u0000"}',
        '{"name": "ok", "description": "\\ud800"}',
        '{"name": "\\udfff\\ud800"}',
        '{"name": NaN}',
        '{"name": 1e999}',
    ]
    json_type = {"content-type": "application/json"}
    responses = [await client.post("/items", content=body, headers=json_type) for body in bodies]

    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"][0]["msg"], body
    assert (await client.get("/items")).json()["total"] == 0
{% if cookiecutter.use_redis %}


async def test_reads_are_served_from_the_cache(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await create(client, "cached")
    await client.get(f"/items/{created['id']}")

    # Change the row behind the cache's back: a cached read still shows the old name.
    engine = create_async_engine(settings.database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE items SET name = 'renamed' WHERE id = :id"), {"id": created["id"]}
        )
    await engine.dispose()

    response = await client.get(f"/items/{created['id']}")
    assert response.json()["name"] == "cached"


async def test_reads_fall_through_to_the_database_when_redis_is_down(
    settings: Settings,
) -> None:
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    async with client_for(down) as client:
{% if cookiecutter.use_auth %}
        client.headers.update(writer_headers(down))
{% endif %}
        created = await create(client, "no-cache")
        first = await client.get(f"/items/{created['id']}")
        second = await client.get(f"/items/{created['id']}")

    assert first.status_code == second.status_code == 200
    assert second.json() == created
{% endif %}
