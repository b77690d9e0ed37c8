"""Tests of the deployment template against the code (infra/)."""
