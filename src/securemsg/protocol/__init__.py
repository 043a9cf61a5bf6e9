"""
The text and JSON wire formats; imports nothing of ours.
"""
