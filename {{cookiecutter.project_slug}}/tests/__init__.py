{% if cookiecutter.use_redis %}
"""The tests of the service.

Everything this test session writes to Redis gets a prefix of its own, so
sessions sharing a Redis server never see each other's keys. The prefix is set
here, before any app module is imported{{ " (the rate limiter reads it at import)" if cookiecutter.use_rate_limit else "" }}.
"""

import os
import uuid

os.environ["CACHE_KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}:"
{% endif %}
