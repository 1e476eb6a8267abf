"""converter: turns each JobDone into a Postgres row message and two ClickHouse CSV rows."""
