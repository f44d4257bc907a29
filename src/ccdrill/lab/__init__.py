"""ccdrill.lab"""
