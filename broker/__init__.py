"""Brokers: the Broker protocol, the simulated broker (embedded default) and the Alpaca adapter.

Nothing outside this package imports alpaca-py.
"""
