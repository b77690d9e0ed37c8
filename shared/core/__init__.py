"""The core: pure types and rules (references, requests, settings, policy, outcomes, failures). No I/O, and
imports nothing else of shared/: every other package may import it."""
