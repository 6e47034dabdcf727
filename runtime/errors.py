"""Exceptions raised by the runtime.

Each one subclasses the stdlib exception a caller would expect, and its message is one sentence that
says what is wrong and what to do, so the CLI can print it as is (no traceback for user errors).
"""

from __future__ import annotations


class MMMOSRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class BundleNotFoundError(MMMOSRuntimeError, FileNotFoundError):
    """No bundle folder (or no manifest.json in it) where the runtime looked."""


class BundleError(MMMOSRuntimeError, ValueError):
    """A bundle exists but cannot be used: bad manifest, unknown format, checksum mismatch, missing file."""


class PrecisionError(MMMOSRuntimeError, ValueError):
    """The requested precision is not in the bundle, or its export-time check did not pass."""


class BackendUnavailableError(MMMOSRuntimeError, ImportError):
    """The requested backend cannot run here (package not installed, no GPU, no engine)."""


class AudioError(MMMOSRuntimeError, ValueError):
    """An input cannot be scored: unreadable, empty, non-finite, a folder, a dangling link."""


class InputError(MMMOSRuntimeError, ValueError):
    """A manifest or input list is malformed (a usage error, not a bad audio file)."""


class OutputError(MMMOSRuntimeError, FileExistsError):
    """The output file exists and neither --force nor --resume was given."""


class NoEnsembleError(BundleError):
    """The bundle has encoder graphs only (no members): it can `encode` but not score."""

    def __init__(self, bundle: object) -> None:
        root = getattr(bundle, "root", bundle)
        super().__init__(
            f"bundle {root} has no ensemble graph (encoders only), so it can encode but not score; "
            "export one with members (mmmos-export --encoders-from BUNDLE --members DIR)."
        )
