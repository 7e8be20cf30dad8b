"""How work goes out: the Celery app, its tasks, providers, rate limits and retries."""
