"""The operator's view (issue 17): the status page (page) and the read-only JSON it reads under /api/ops."""
