"""`python -m app.jobs` starts a worker, `python -m app.jobs scheduler` the scheduler;
`python -m app.jobs check` exits 0 while the one on this machine answers."""

import sys


def main(arguments: list[str]) -> int:
    if arguments not in ([], ["scheduler"], ["check"]):
        print("usage: python -m app.jobs [scheduler | check]", file=sys.stderr)
        return 2
    if arguments == ["check"]:
        # Only what the check needs: a probe that imports the whole app is a slow probe.
        from app.jobs.health import check
        from app.settings import get_settings

        return check(get_settings().worker_health_port)
    from app.jobs.worker import run_worker

    run_worker(scheduler=arguments == ["scheduler"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
