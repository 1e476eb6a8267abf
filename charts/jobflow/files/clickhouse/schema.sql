-- ClickHouse reads clickhouse-topic through its Kafka engine; the materialized view moves each
-- CSV row into table jobs. ${kafka_broker_list} is filled in by the apply command.
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
            kafka_skip_broken_messages = 10;

CREATE TABLE IF NOT EXISTS jobs (
  id String,
  status String,
  timestamp DateTime
) ENGINE = MergeTree()
ORDER BY timestamp;

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
)
WHERE isNotNull(parsed);
