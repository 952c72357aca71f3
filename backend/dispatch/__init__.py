"""The dispatcher process: job loops that claim jobs from Redis and run them on Dask. Never imports backend.api."""
