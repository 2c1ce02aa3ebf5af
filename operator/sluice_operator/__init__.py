"""Sluice operator: reconciles BackpressurePolicy and CircuitBreaker resources."""

__version__ = "0.1.0"
