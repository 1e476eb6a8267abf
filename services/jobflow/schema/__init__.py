"""Applying a store's migrations (ClickHouse, PostgreSQL, ksqlDB) and checking its tables
against them.

One implementation serves the local stack and the Kubernetes Job the operator runs.
"""
