-- Table written by the Kafka Connect JDBC sink from postgres-topic; dates are epoch seconds.
CREATE TABLE IF NOT EXISTS jobs
(
    id varchar(36) PRIMARY KEY,
    status text,
    create_date bigint default (EXTRACT(epoch FROM now()))::bigint,
    finish_date bigint default (EXTRACT(epoch FROM now()))::bigint
);
