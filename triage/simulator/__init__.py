"""The night-shift simulator: replays a reading shift under FIFO and AI ordering (docs/simulation.md)."""
