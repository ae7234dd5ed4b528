"""The browser executor: pool, URL policy, step runner."""
