"""Development only, not the runtime API: real servers on loopback (moto's S3, `mlflow server`) for the
test suite and `make demo-s3`. Their dependencies (moto) come with the `test` extra only."""
