"""Tests that need a CUDA GPU (``make test-gpu``); skipped without one (tests/cuda/conftest.py)."""
