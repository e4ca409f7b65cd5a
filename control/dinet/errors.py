"""The exceptions dinet raises. Each names the bad value; the CLI turns them into one line and exit 1."""


class DinetError(Exception):
    """Base of every error dinet raises on purpose."""


class ConfigError(DinetError, ValueError):
    """A malformed VIP, port, protocol, weight or other user input."""


class UnknownServiceError(DinetError, KeyError):
    """A service that is not installed on the node."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown service"


class UnknownInstanceError(DinetError, KeyError):
    """An instance id that the service does not have."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown instance"


class TableFullError(DinetError):
    """A data-plane table has no room for another entry."""


class InterfaceError(DinetError):
    """A missing interface or namespace, or an attach/detach the kernel refused."""


class VerifierError(DinetError):
    """The kernel refused to load a program; `log` holds the verifier's output."""

    def __init__(self, program: str, log: str):
        super().__init__(
            f"the kernel refused to load {program}: {log.strip().splitlines()[-1] if log.strip() else 'no log'}"
        )
        self.program = program
        self.log = log


class DataPlaneError(DinetError):
    """A data-plane operation failed (a map write refused, a pinned map of the wrong shape, ...)."""
