"""What the lifespan does once per process, whatever the features."""

import gc

from app.lifespan import FULL_COLLECTION_THRESHOLD
from app.settings import Settings
from tests.support import client_for


async def test_the_first_start_tunes_the_collector_and_later_starts_do_not(
    settings: Settings,
) -> None:
    async with client_for(settings):
        frozen = gc.get_freeze_count()
    # The imported modules alone are tens of thousands of objects.
    assert frozen > 10_000
    assert gc.get_threshold()[2] == FULL_COLLECTION_THRESHOLD

    async with client_for(settings):
        assert gc.get_freeze_count() <= frozen
