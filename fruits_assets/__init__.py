"""Dagster definitions of the fruits platform: assets, partitions, resources, IO managers, checks."""
