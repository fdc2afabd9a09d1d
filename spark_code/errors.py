"""The one distinction the orchestrator needs from the Spark code: failures that running again cannot clear."""


class PermanentError(Exception):
    """Bad input data, a bad setting or a missing upstream output: retrying cannot help, so the step fails at once
    with this message. Anything else (storage, a lost executor, a dropped connection) may clear and is retried."""


class MissingOutputError(PermanentError, FileNotFoundError):
    """An upstream output (a class's rows, a table, a model) that was never materialized."""
