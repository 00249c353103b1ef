from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.db import StoredText


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
