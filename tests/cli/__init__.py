"""Tests of the operator CLI (cli/)."""
