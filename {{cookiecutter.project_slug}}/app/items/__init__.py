"""Items: the example resource. Copy this package to add your own (see the README).

`models.py` holds the table, `schemas.py` what the API reads and returns, and
`routes.py` the endpoints.
"""
