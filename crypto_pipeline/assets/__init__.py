"""The assets: `prices` and `rankings` from the upstreams, and `top_assets`, the served table with its checks."""
