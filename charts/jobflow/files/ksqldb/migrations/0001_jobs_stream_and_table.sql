-- A stream over processor-topic (JobDone records keyed by job id), as the informer's source.
CREATE STREAM IF NOT EXISTS jobs_stream (
  id VARCHAR KEY,
  status VARCHAR,
  create_date VARCHAR,
  finish_date VARCHAR
) WITH (
  KAFKA_TOPIC = 'processor-topic',
  VALUE_FORMAT = 'JSON'
);

-- The latest state of each job, materialized and keyed by id: the informer's pull queries look
-- a key up here instead of scanning the whole stream on every request.
CREATE TABLE IF NOT EXISTS jobs_table AS
  SELECT id,
         LATEST_BY_OFFSET(status) AS status,
         LATEST_BY_OFFSET(create_date) AS create_date,
         LATEST_BY_OFFSET(finish_date) AS finish_date
  FROM jobs_stream
  GROUP BY id
  EMIT CHANGES;
