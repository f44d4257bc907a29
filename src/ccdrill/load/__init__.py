"""ccdrill.load"""
