"""Agents: thin Faust adapters around the pure decision code."""
