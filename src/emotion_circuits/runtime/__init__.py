"""How heavy work runs: the local/Ray executor, devices, dtypes and out-of-memory backoff."""
