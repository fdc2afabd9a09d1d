"""The photos' features: MobileNetV2 embeddings as a Spark transform (`embeddings`) and the store that embeds each
photo once (`embedding_store`)."""
