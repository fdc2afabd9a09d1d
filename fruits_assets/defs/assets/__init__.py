"""Assets by stage: ingestion (raw images), features (embeddings, rejected images, reduced features), models (PCA,
classifier and its evaluation); `common` holds what every Spark-backed asset needs."""
