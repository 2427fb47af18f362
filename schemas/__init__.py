"""The public contracts of linetrace: event envelope, bodies, topics, signing.

Imports nothing else of linetrace, so station vendors and auditors can depend on it alone.
"""
