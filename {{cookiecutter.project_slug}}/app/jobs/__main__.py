"""`python -m app.jobs` starts the worker; `python -m app.jobs check` exits 0 while it answers."""

import sys


def main(arguments: list[str]) -> int:
    if arguments == ["check"]:
        # Only what the check needs: a probe that imports the whole app is a slow probe.
        from app.jobs.health import check
        from app.settings import get_settings

        return check(get_settings().worker_health_port)
    from app.jobs.worker import run_worker

    run_worker()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
