"""Prometheus metrics: the collectors (`collectors`), and the middleware that counts
requests and serves `/metrics` (`middleware`). Each feature with figures of its own
keeps them current where it does its work.
"""
