"""Measuring rankings: metrics, experiments over datasets, analyses, paired tests and `reproduce`."""
