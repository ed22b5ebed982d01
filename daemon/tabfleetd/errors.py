"""The exception tree of tabfleetd, each class with a numbered error code.

    TabfleetError                 1000
    ├── ProtocolError             1100  a frame that cannot be read
    │   └── FrameTooLarge         1101
    ├── RequestError              1200  a well-formed request that cannot be served
    │   ├── UnknownOp             1201
    │   ├── BadArgs               1202
    │   ├── VersionMismatch       1203
    │   ├── NotAuthorized         1204
    │   └── Busy                  1205  refused for now (connection or byte caps); try again shortly
    ├── NotFound                  1300
    │   └── UnknownJob            1301
    ├── InputError                1400  user input (files, directories) that is wrong
    │   ├── PromptFileError       1401
    │   ├── OutDirError           1402
    │   │   └── ForeignFile       1404  something tabfleet did not write sits at an output's name
    │   ├── ProfileError          1403  a site profile that cannot be used
    │   ├── OverCapacity          1405  a job over the configured caps on tasks
    │   └── SessionFileError      1406  a cookies file that cannot be imported as an account's session
    ├── StateError                1500
    │   ├── IllegalTransition     1501
    │   └── StoreFormatError      1502  a store written by a newer tabfleetd
    ├── ConfigError               1600
    ├── BrowserError              1700
    │   ├── ChromiumNotFound      1701
    │   └── BrowserStartError     1702
    ├── SiteError                 1800  a prompt that the site did not turn into an image
    ├── AlreadyRunning            1900
    └── StoreDamaged              2000  the LMDB store cannot be trusted; the daemon will not start on it

Codes travel in error replies (``{"code", "message"}``) so a client can tell
failures apart without parsing messages.
"""

from __future__ import annotations


class TabfleetError(Exception):
    code = 1000


class ProtocolError(TabfleetError):
    code = 1100


class FrameTooLarge(ProtocolError):
    code = 1101


class RequestError(TabfleetError):
    code = 1200


class UnknownOp(RequestError):
    code = 1201


class BadArgs(RequestError):
    code = 1202


class VersionMismatch(RequestError):
    code = 1203


class NotAuthorized(RequestError):
    code = 1204


class Busy(RequestError):
    """The daemon refused a connection or a request for now; nothing was done, so a retry is safe."""

    code = 1205


class NotFound(TabfleetError):
    code = 1300


class UnknownJob(NotFound):
    code = 1301


class InputError(TabfleetError):
    code = 1400


class PromptFileError(InputError):
    """A prompt file that cannot be queued; the message names the file and line."""

    code = 1401

    def __init__(self, filename: str, line: int | None, problem: str) -> None:
        self.filename = filename
        self.line = line
        self.problem = problem
        where = f"{filename} line {line}" if line is not None else filename
        super().__init__(f"{where}: {problem}")


class OutDirError(InputError):
    code = 1402


class ForeignFile(OutDirError):
    """A symlink, a hard link, a directory or a non-image where tabfleet reads or writes one of its files."""

    code = 1404


class ProfileError(InputError):
    """A site profile that cannot be used; each problem names its key."""

    code = 1403

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class OverCapacity(InputError):
    """A submit over max_tasks_per_job or max_queued_tasks."""

    code = 1405


class SessionFileError(InputError):
    """A cookies export (Netscape cookies.txt or JSON) that cannot be an account's session; names the file and line."""

    code = 1406

    def __init__(self, filename: str, line: int | None, problem: str) -> None:
        where = f"{filename} line {line}" if line is not None else filename
        super().__init__(f"{where}: {problem}")


class StateError(TabfleetError):
    code = 1500


class IllegalTransition(StateError):
    code = 1501


class StoreFormatError(StateError):
    """The store's format is newer than this tabfleetd reads: it may hold what this one would misread."""

    code = 1502


class ConfigError(TabfleetError):
    code = 1600


class BrowserError(TabfleetError):
    code = 1700


class ChromiumNotFound(BrowserError):
    code = 1701


class BrowserStartError(BrowserError):
    code = 1702


class SiteError(TabfleetError):
    """The site did not turn a prompt into an image; ``kind`` is its failure class.

    ``blame`` says whose fault it was: "site" when the site said so or let the
    page hang or freeze (it never counts against the worker), "worker" when the
    browser or its driving failed.
    """

    code = 1800

    def __init__(self, message: str, kind: str = "transient", wait_s: float | None = None, *,
                 blame: str = "worker", frozen: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.wait_s = wait_s
        self.blame = blame
        self.frozen = frozen


class AlreadyRunning(TabfleetError):
    code = 1900


class StoreDamaged(TabfleetError):
    """The store's file is missing, truncated or unreadable; the message says how to restore it."""

    code = 2000
