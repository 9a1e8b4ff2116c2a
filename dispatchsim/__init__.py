"""dispatchsim: dispatch engine and simulator for webhook-style push delivery."""
__version__ = "0.1.0"
