"""The runtime every agent shares: settings, database, Kafka, records, the one
transaction machinery (:mod:`~pipeline.runtime.processor`), the outbox relay,
gap repair and the Faust adapter. Imports ``events`` and frameworks only."""
