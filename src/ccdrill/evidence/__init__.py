"""ccdrill.evidence"""
