"""Feature: imports. An import request in (HTTP API, queue), exactly one terminal state out, recorded."""
