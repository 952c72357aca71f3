"""The base every part of the backend shares: settings, the job record and its kinds,
errors, bounded waits. Imports nothing else of backend."""
