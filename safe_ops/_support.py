"""The torch and Python releases safe_ops is built and tested on, stated once: setup.py reads this file (it imports
nothing), import checks the running torch against it, and the version matrix (.ci/matrix.py, `make matrix`) tests
each pair. What differs between the supported torches is handled where it lives, gated by version or by what torch
has, and listed in the README's "Supported versions"."""
OLDEST_TORCH = (2, 11)
NEWEST_TESTED_TORCH = (2, 15)
OLDEST_PYTHON = (3, 10)
NEWEST_TESTED_PYTHON = (3, 13)


def release(version: str) -> tuple:
    """(major, minor) of a version string such as '2.11.0+cu130' or '2.16.0.dev20260101'."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def name(release_: tuple) -> str:
    return ".".join(map(str, release_))


def check_torch(version: str) -> None:
    """An ImportError naming the version for a torch older than the oldest supported: its C++ API and DTensor lack
    what safe_ops is built on, and the failure would otherwise be an undefined symbol or an error from inside torch."""
    if release(version) < OLDEST_TORCH:
        raise ImportError(
            f"safe_ops needs torch >= {name(OLDEST_TORCH)} (tested on {name(OLDEST_TORCH)} to "
            f"{name(NEWEST_TESTED_TORCH)}); torch {version} is installed."
        )
