"""Moved to harness/s3_server.py (bench uses it too). This re-export remains only for
tests/test_storage_faults.py and tests/test_crash_safety.py, until they import from harness."""

from harness.s3_server import CREDENTIALS, MotoServer, put

__all__ = ["CREDENTIALS", "MotoServer", "put"]
