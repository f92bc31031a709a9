"""Client libraries the tests run safe_ops in (torchvision, timm). Each torchvision release is built for one torch,
and some torch builds have none (every torchvision on the registry fails to import beside torch 2.13.0's CPU file),
so a leg of the version matrix may lack them: a test needing one then skips, naming the torch. Where the project
installs them (`make test` sets SAFE_OPS_REQUIRE_CLIENTS=1) a missing one fails instead of hiding its tests."""
import importlib
import os

import pytest
import torch


def client(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("SAFE_OPS_REQUIRE_CLIENTS") == "1":
            raise
        pytest.skip(f"{module.split('.')[0]} is not installed beside torch {torch.__version__} (no release of it "
                    f"for this torch build): {exc}")
