"""Head sets: what they are, how they are selected from per-head statistics, and the ones shipped per model."""
