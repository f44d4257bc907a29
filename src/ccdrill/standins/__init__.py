"""ccdrill.standins"""
