"""Operations: health checks, metrics, logs and the prune archive."""
