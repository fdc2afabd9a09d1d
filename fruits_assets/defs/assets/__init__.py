"""Assets by stage: ingestion (raw images), features (embeddings, rejected images, reduced features), models (PCA,
classifier and its evaluation), field (the classifier on photos of the app's world); `common` holds what every
Spark-backed asset needs."""
