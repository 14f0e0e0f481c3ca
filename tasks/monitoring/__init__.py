"""Monitoring: drift and live accuracy of the served versions, alerts through Prometheus."""
