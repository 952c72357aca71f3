"""What every process records about jobs: timing records, performance reports, Prometheus and CloudWatch metrics."""
