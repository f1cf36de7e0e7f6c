"""A Python-function reward model for the walk-through: short, direct answers score higher."""


def concise(prompt: str, response: str) -> float:
    """Minus the number of words of the response (an empty response scores lowest)."""
    words = len(response.split())
    return -float(words) if words else -100.0
