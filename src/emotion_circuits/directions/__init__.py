"""Emotion directions: the value type, the direction methods (one file each) and the vectors stage logic."""
