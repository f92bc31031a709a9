"""Which arguments an aten op writes, read once per op from its schema (``Tensor(a!)``) and cached."""
from __future__ import annotations

from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple

from torch import Tensor

from ._torch import increment_version

# In-place ops that change a tensor's metadata (shape, strides, storage pointer) and not the bytes of its
# memory. The guard's records hold their own alias, which these ops leave untouched.
METADATA_OPS = frozenset({
    "detach_", "t_", "transpose_", "squeeze_", "unsqueeze_", "as_strided_", "swapaxes_", "swapdims_",
    "resize_", "resize_as_", "set_", "_coalesced_", "sparse_resize_", "sparse_resize_and_clear_",
    "resize_as_sparse_", "_resize_output_",
})


class WrittenArg(NamedTuple):
    """One argument the op writes (``self`` of ``add_``, ``out`` of ``add.out``)."""

    index: int
    name: str
    kwarg_only: bool

    def value(self, args: tuple, kwargs: dict) -> Any:
        return kwargs.get(self.name) if self.kwarg_only or self.index >= len(args) else args[self.index]


class WriteSpec(NamedTuple):
    """What an op writes. ``metadata_only``: it changes shape/strides/storage, not bytes (``t_``, ``set_``).
    ``foreach``: a ``_foreach_*_`` op (see ``bump_foreach_versions``)."""

    args: Tuple[WrittenArg, ...]
    metadata_only: bool
    foreach: bool


# op -> its WriteSpec, or None when it writes nothing. The dispatch mode reads it directly (one dict lookup).
SPECS: Dict[Any, Optional[WriteSpec]] = {}


def write_spec(func: Any) -> Optional[WriteSpec]:
    """Compute and cache what ``func`` writes."""
    spec = None
    schema = getattr(func, "_schema", None)
    if schema is not None:
        writes = tuple(
            WrittenArg(i, a.name, a.kwarg_only)
            for i, a in enumerate(schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        )
        if writes:
            name = schema.name.split("::")[-1]
            spec = WriteSpec(writes, name in METADATA_OPS, name.startswith("_foreach_"))
    SPECS[func] = spec
    return spec


def written_tensors(spec: WriteSpec, args: tuple, kwargs: dict) -> Iterator[Tensor]:
    """The tensors the op is about to write (lists for ``_foreach_`` ops and ``out=`` tuples)."""
    for arg in spec.args:
        value = arg.value(args, kwargs)
        if value is None:
            continue
        for t in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(t, Tensor):
                yield t


def bump_foreach_versions(spec: WriteSpec, args: tuple, kwargs: dict) -> None:
    """While any TorchDispatchMode is active, PyTorch's ``_foreach_*_`` ops leave the version counters of
    tensors that require grad unchanged, so PyTorch's own check would miss writes into tensors saved outside
    the guard. Bump them (bumping twice, where torch does too, is harmless)."""
    if increment_version is None:
        return
    for t in written_tensors(spec, args, kwargs):
        if t.requires_grad and not t.is_inference():
            increment_version(t)
