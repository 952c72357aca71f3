"""The API's routes by resource: each kind's (built from its declaration), the file doors,
job records and reports, and the service's own (health, metrics)."""
