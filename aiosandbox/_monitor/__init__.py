"""Monitors: turn a sandboxee's kernel events into a Result."""
