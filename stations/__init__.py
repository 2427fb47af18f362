"""What runs at a station: the StationClient, the line simulator, the burn-in runner."""
