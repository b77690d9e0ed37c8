"""Feature: the scheduled refresh. Tracked images -> which tags changed upstream -> import requests."""
