"""Authentication: users with passwords, short-lived access tokens, refresh tokens that
rotate, and API keys for machines.

- `models.py`: the tables (users, refresh tokens, API keys, login failures);
- `passwords.py`: argon2 hashing, off the event loop;
- `tokens.py`: access tokens (JWTs) and the random secrets behind refresh tokens and keys;
- `sessions.py`: refresh-token families: issue, rotate, revoke;
- `throttle.py`: failed logins per email, and the lock after too many;
- `principal.py`: who a bearer token or API key names, and what it may do;
- `routes.py`: the endpoints under /auth;
- `__main__.py`: `python -m app.auth create-admin`.

Routes protect themselves with the dependencies in `app/deps.py`.
"""
