"""Applying the pipeline's schema statements (ClickHouse DDL, ksqlDB statements) to a target.

One implementation serves the local stack and the Kubernetes Job the operator runs.
"""
