"""What every figure shares: the run's services, processes, contenders, producer and report.
It imports neither the test suite nor pytest."""
