"""dropship's runtime and entry points, one folder per layer (docs/architecture.md):

- :mod:`pipeline.runtime`: settings, database, Kafka, records, the processor,
  the outbox relay, gap repair, the Faust adapter (imports ``events`` only);
- :mod:`pipeline.devstack`: the embedded broker and Postgres for development;
- :mod:`pipeline.entry`: the CLI, the worker's composition root, the consumer
  registry, the demo (nothing of ours imports it).
"""
