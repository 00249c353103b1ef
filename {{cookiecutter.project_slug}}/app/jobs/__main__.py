"""`python -m app.jobs` starts a worker, `python -m app.jobs scheduler` the scheduler;
`python -m app.jobs check` exits 0 while the one on this machine answers."""

import os
import sys


def main(arguments: list[str]) -> int:
    if arguments not in ([], ["scheduler"], ["check"]):
        print("usage: python -m app.jobs [scheduler | check]", file=sys.stderr)
        return 2
    if arguments == ["check"]:
        from app.jobs.health import check

        # The port from the environment where it is set (the compose files set it):
        # importing the settings takes about 0.4 s of CPU, and a container probe runs
        # every few seconds, within the container's CPU limit.
        port = os.environ.get("WORKER_HEALTH_PORT", "")
        if port.isdigit():
            return check(int(port))
        from app.settings import get_settings

        return check(get_settings().worker_health_port)
    from app.jobs.worker import run_worker

    run_worker(scheduler=arguments == ["scheduler"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
