"""What the template's tests and its benchmark share: the feature list, baking,
virtualenvs, processes and servers. Importable from the template's root
(`pytest` and `python -m bench` both run there).
"""
