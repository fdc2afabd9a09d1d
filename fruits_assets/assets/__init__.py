"""Assets by stage: ingestion (raw images), features (embeddings, reduced features), models (PCA)."""
