"""What a user's pack hook returned: the tensors it holds, and the same object with some of them replaced."""
from __future__ import annotations

from typing import Any, Callable, List

from torch import Tensor

from ._extent import extent


def tensors_in(obj: Any, depth: int = 3) -> List[Tensor]:
    """Tensors held by a pack hook's result, looked for in tuples, lists, dicts and object attributes."""
    if isinstance(obj, Tensor):
        return [obj]
    if depth == 0:
        return []
    if isinstance(obj, (tuple, list)):
        items = obj
    elif isinstance(obj, dict):
        items = obj.values()
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = vars(obj).values()
    else:
        return []
    found: List[Tensor] = []
    for item in items:
        found += tensors_in(item, depth - 1)
    return found


def replace_aliases(obj: Any, key: int, clone: Callable[[Tensor], Tensor], depth: int = 3) -> Any:
    """``obj`` with the tensors on storage ``key`` replaced by ``clone(tensor)`` (containers rebuilt, object
    attributes set in place)."""
    if isinstance(obj, Tensor):
        ext = extent(obj)
        return clone(obj) if ext is not None and ext.key == key else obj
    if depth == 0:
        return obj
    if isinstance(obj, tuple):
        items = [replace_aliases(x, key, clone, depth - 1) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [replace_aliases(x, key, clone, depth - 1) for x in obj]
    if isinstance(obj, dict):
        return {k: replace_aliases(v, key, clone, depth - 1) for k, v in obj.items()}
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        for name, value in list(vars(obj).items()):
            new = replace_aliases(value, key, clone, depth - 1)
            if new is not value:
                setattr(obj, name, new)
    return obj
