"""Gymnasium environments of the lab. Importing this package registers the ``lab/...`` ids.

This package is the ground floor: it imports numpy, gymnasium and pygame, never torch and
nothing of ``lab``, ``agents`` or ``generative``.
"""
