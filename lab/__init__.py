"""Lab: a reinforcement-learning and generative-model simulation lab."""

__version__ = "0.1.0"
