"""`python -m cli`: the operator's command line (refresh now; import, status, list and redrive later)."""
