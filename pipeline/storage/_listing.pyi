"""Types of the C listing (``_listing.c``, which documents what each value holds)."""

def scan(
    folder: bytes, prefix: bytes, suffixes: tuple[bytes, ...] | None, /
) -> tuple[int, bytes, bytes, bytes, bytes, list[bytes], list[bytes]]: ...
