"""The pixelmill worker: Celery tasks that turn queued jobs into images."""
