"""What a benchmark sets up and drives: the system under test and the load on it."""
