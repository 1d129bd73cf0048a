"""The ``maezoo`` command (filled in by the engine issue)."""


def main() -> None:  # pragma: no cover - replaced below
    import maezoo

    print(maezoo.list_components())
