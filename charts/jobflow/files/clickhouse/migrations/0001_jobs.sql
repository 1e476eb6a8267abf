-- ClickHouse reads clickhouse-topic through its Kafka engine; the materialized view moves each
-- CSV row into table jobs. ${kafka_broker_list} is filled in by the apply command.
--
-- The engine's consumer reads committed records only: librdkafka's isolation.level defaults to
-- read_committed, and the server config spells it out (k8s/clickhouse, local/conf/clickhouse).
--
-- kafka_handle_error_mode = 'stream': a message that does not parse becomes a row with _error
-- and _raw_message set instead of failing its block; jobs_errors_mv keeps it in jobs_errors (our
-- dead-letter table), and jobs_mv leaves it out. kafka_skip_broken_messages is the spec's
-- setting; in stream mode no message is broken enough to need it.
CREATE TABLE IF NOT EXISTS jobs_kafka (
  id String,
  status String,
  timestamp String
) ENGINE = Kafka SETTINGS
            kafka_broker_list = '${kafka_broker_list}',
            kafka_topic_list = 'clickhouse-topic',
            kafka_group_name = 'clickhouse',
            kafka_format = 'CSV',
            kafka_num_consumers = 1,
            kafka_skip_broken_messages = 10,
            kafka_handle_error_mode = 'stream';

-- The spec's columns. The engine commits its Kafka offsets after inserting, so a restart can
-- insert a block again: ReplacingMergeTree keyed by (id, status) folds such repeats into one row
-- per job and status. Merges do that eventually; read with FINAL to see each job's `create` and
-- `finish` once at any moment: SELECT * FROM jobs FINAL.
CREATE TABLE IF NOT EXISTS jobs (
  id String,
  status String,
  timestamp DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(timestamp)
ORDER BY (id, status);

-- A row whose timestamp does not parse is left out: its NULL cannot go into the DateTime column,
-- and the failed insert would stall the whole Kafka consumer, good rows included.
CREATE MATERIALIZED VIEW IF NOT EXISTS jobs_mv
TO jobs
(
  id String,
  status String,
  timestamp DateTime
)
AS
SELECT
  id,
  status,
  assumeNotNull(parsed) AS timestamp
FROM (
  SELECT id, status, parseDateTimeBestEffortOrNull(timestamp) AS parsed
  FROM jobs_kafka
  WHERE length(_error) = 0
)
WHERE isNotNull(parsed);

-- What jobs_mv leaves out, with where it came from and why; kept for 30 days.
CREATE TABLE IF NOT EXISTS jobs_errors (
  received_at DateTime DEFAULT now(),
  topic String,
  partition UInt64,
  offset UInt64,
  raw_message String,
  error String
) ENGINE = MergeTree()
ORDER BY received_at
TTL received_at + INTERVAL 30 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS jobs_errors_mv
TO jobs_errors
(
  topic String,
  partition UInt64,
  offset UInt64,
  raw_message String,
  error String
)
AS
SELECT
  _topic AS topic,
  _partition AS partition,
  _offset AS offset,
  if(length(_error) = 0, concat(id, ',', status, ',', timestamp), _raw_message) AS raw_message,
  if(length(_error) = 0, 'timestamp is not a date and time', _error) AS error
FROM jobs_kafka
WHERE length(_error) > 0 OR isNull(parseDateTimeBestEffortOrNull(timestamp));
