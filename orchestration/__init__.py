"""Dagster orchestration of the customer warehouse.

Wiring only: the logic lives in ``customer_warehouse`` (Python) and in the dbt project (SQL).
``orchestration.definitions`` holds the one ``Definitions`` object (see docs/orchestration.md).
"""
