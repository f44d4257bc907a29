"""`ccdrill drill`: filled in below."""


def add_drill_parser(sub) -> None:
    pass
