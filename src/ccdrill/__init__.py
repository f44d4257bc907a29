"""ccdrill: rehearsal harness for the call-center DR upgrade and the Shanghai -> Shenzhen migration."""
__version__ = "0.1.0"
