"""The comparison of extractors: retrieval metrics, the evaluation protocol, explanations and the report."""
