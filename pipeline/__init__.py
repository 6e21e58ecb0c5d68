"""dropship runtime: settings, database, Kafka, transactions, dev stack, entry points."""
