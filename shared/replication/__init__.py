"""Feature: replication on push. An ACR ImagePushed event + the rules -> import requests."""
