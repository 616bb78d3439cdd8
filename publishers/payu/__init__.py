"""PayU India: hashes, credentials, the merchant-API client and an offline simulator.

Import the pieces from their modules (``publishers.payu.client`` …); this package imports nothing so that
the CLI stays fast to start.
"""
