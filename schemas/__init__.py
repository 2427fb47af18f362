"""The public contracts of linetrace: event envelope, bodies, topics, signing, and routes
(`routes/`: the route model, its rules, the loader and the product route files).

Imports nothing else of linetrace, so station vendors and auditors can depend on it alone.
"""
