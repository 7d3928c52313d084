"""The Celery worker: takes a job id off the training queue and turns the job row into a training run.

    celery_app.py  the worker's Celery app and signals (queues served, shutdown hand-back)
    tasks.py       the one task: run_job
    runner.py      a job's life: claim, train, export, record the outcome
    setup.py       what every process of a run builds: data, model, the loop's arguments
    parallel.py    a job over several devices: the other ranks and their watchdog
    reporting.py   progress into the database, through outages
    trackers/      the spec's experiment trackers
    data/          tokenising, caching, packing and evaluating the dataset
"""
