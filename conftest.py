"""Top-level pytest configuration: registers the golden-test plugin (harness/pytest_plugin.py).

``pytest`` alone collects the unit and mounted tests (pyproject testpaths); golden tests are
collected with ``pytest tests/sequence`` or ``pytest --golden`` (one item per sequence entry,
node id ``tests/sequence::NAME``).
"""

pytest_plugins = ["harness.pytest_plugin"]
