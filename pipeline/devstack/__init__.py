"""The embedded development stack: Tansu broker + PostgreSQL on loopback."""

from pipeline.devstack.processes import StackError
from pipeline.devstack.stack import Stack, down, load, require_running, up

__all__ = ["Stack", "StackError", "down", "load", "require_running", "up"]
