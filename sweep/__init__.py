"""The sweep engine: catalog of sweeps, Ray Tune trainable, MLflow tracking, aggregation."""
