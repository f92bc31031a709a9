"""The exceptions and warnings safe_ops raises, in a module of their own so every other module can import them
without importing each other."""


class InplaceHazardError(RuntimeError):
    """An in-place update that can be neither done safely nor replaced by a copy."""


class InplaceHazardWarning(UserWarning):
    """``safe_ops.guard(mode="warn")``: an in-place write into memory that autograd saved for backward."""
