"""Superset configuration for tests/test_superset.py and tests/bi/superset/screenshot.py.

Loaded by Superset through SUPERSET_CONFIG_PATH. Everything a throw-away local Superset needs and
nothing else: the metadata database is SQLite in the folder SUPERSET_TEST_HOME names, so each run
starts from nothing; no cache, no Celery, no CSRF (the test drives the REST API with a bearer token).
"""

import os

_HOME = os.environ["SUPERSET_TEST_HOME"]

SECRET_KEY = "seed-pipeline-superset-test-only"  # a local, throw-away instance
SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.join(_HOME, "superset.db")
WTF_CSRF_ENABLED = False
TALISMAN_ENABLED = False
CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
DATA_CACHE_CONFIG = {"CACHE_TYPE": "NullCache"}
FILTER_STATE_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache"}
EXPLORE_FORM_DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache"}
RATELIMIT_STORAGE_URI = "memory://"
RATELIMIT_ENABLED = False
# Superset asks a package index for nothing, but its front end would report usage: off.
SCARF_ANALYTICS = False
# Results of SQL Lab queries come back in the response (no results backend, no async).
SQLLAB_ASYNC_TIME_LIMIT_SEC = 60
