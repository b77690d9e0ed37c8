"""A local stand-in for the Azure Functions host that drives the app's own functions (see docs/runner.md)."""

from dev.runner.host import Runner
from dev.runner.invoker import Invocation

__all__ = ["Invocation", "Runner"]
