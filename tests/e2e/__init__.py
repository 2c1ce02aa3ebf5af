"""Opt-in tests against a real Kubernetes cluster (kind); `make e2e` runs them."""
