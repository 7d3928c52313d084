"""The Celery worker: takes a job id off the training queue and turns the job row into a training run."""
