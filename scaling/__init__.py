"""Compound model scaling (Tan & Le, 2019): math, timm builders, complexity, data and trials."""
