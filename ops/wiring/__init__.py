"""The composition floor: builds processes from settings (issue 11 item 2)."""
