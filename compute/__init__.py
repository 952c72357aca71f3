"""What runs on Dask workers: pure functions and graph builders.

Imports nothing from ``backend``: a notebook can ``import compute`` against any cluster.
"""
