"""One partition per fruit class, registered from the data by the discovery sensor (never hard-coded)."""

from dagster import DynamicPartitionsDefinition

fruit_class_partitions = DynamicPartitionsDefinition(name="fruit_class")
