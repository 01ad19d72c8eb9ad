"""Evaluate synthetic images: diversity, realism, downstream benefit, memorisation.

Each part streams image folders in batches and returns a dict of figures; ``report`` writes
them as JSON, a markdown table and PNG charts. ``lowbudget evaluate <part>`` runs one part.
"""
