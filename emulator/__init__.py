"""A local stand-in for CoinMarketCap and CryptoCompare over a deterministic market; imports nothing of the project."""
