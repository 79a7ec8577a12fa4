"""``python -m cirrus``: the ``cirrus`` command."""

from cirrus.entry import main

main()
