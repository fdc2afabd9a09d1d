"""The models: the PCA (`pca`) and when it is fitted again (`pca_refit`), the classifier (`classifier`) and when its
penalty is searched again (`penalty_search`), and saving and loading Spark ML models (`ml_models`)."""
