"""Storage on local disk and S3: the driver's folder operations (`storage`), publishing by pointer (`publish`), and
the class-partitioned Parquet outputs published that way (`parquet_store`)."""
