"""Background jobs, run by SAQ on the service's Redis.

- `tasks.py`: the tasks, and the scheduled ones with their cron lines;
- `queue.py`: `Jobs`, which the web process enqueues on (`JobsDep`);
- `worker.py`: the worker process, `python -m app.jobs`, which also schedules.
"""
