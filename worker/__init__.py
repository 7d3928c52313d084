"""The Celery worker: takes a job id off the training queue and turns the job row into a training run.

    celery_app.py         the worker's Celery app and signals (queues served, shutdown hand-back)
    tasks.py              the one task: run_job, which calls runner.claim_and_run
    runner.py             a job's life: claim, train, export, record the outcome
    run_setup.py          what every process of a run builds: data, model, the loop's arguments
    parallel.py           a job over several devices: the other ranks and their watchdog
    reporting.py          ProgressReporter: progress buffered, written in batches from a thread; SHUTDOWN
    db_link.py            DatabaseLink: a run's writes and reads, retried through a database outage
    heartbeat.py          the thread that stamps the job row while the run lives
    checkpoint_upload.py  checkpoints into the store from a thread, one at a time, retried through an outage
    trackers/             the spec's experiment trackers
    data/                 tokenising, caching, packing and evaluating the dataset
"""
