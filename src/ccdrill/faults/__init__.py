"""ccdrill.faults"""
