"""informer: answers GET /info/{id} with a job's status, from ksqlDB or PostgreSQL."""
