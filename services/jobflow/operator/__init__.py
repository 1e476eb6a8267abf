"""operator: applies StreamSchema resources (ksqlDB statements, ClickHouse DDL) as Jobs."""
