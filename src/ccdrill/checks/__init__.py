"""ccdrill.checks"""
