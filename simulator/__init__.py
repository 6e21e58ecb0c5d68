"""A seeded market of shops and suppliers that drives the pipeline through Kafka only."""
