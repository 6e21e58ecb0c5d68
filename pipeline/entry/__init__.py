"""Entry points: the ``dropship`` CLI, the worker's composition root
(:mod:`~pipeline.entry.worker`), the consumer registry
(:mod:`~pipeline.entry.registry`), the demo and the simulator's command. The top
layer: it may import every other one, and nothing of ours imports it."""
