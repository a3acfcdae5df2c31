"""Long jobs behind streaming RPCs: progress events, then one result."""
