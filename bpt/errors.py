"""bpt's error tree: every failure a user can cause maps to one of these, and the CLI
turns each into a one-line message and a documented exit code."""


class BptError(Exception):
    """Base class: raised for any failure bpt reports to a user."""

    exit_code = 1


class ConfigError(BptError):
    """Raised when a setting, flag or job parameter has an invalid value."""

    exit_code = 2


class DataError(BptError):
    """Raised when a data set is missing, malformed or does not fit the model."""

    exit_code = 3


class ConnectionFailed(BptError):
    """Raised when Redis cannot be reached or refuses us (wrong password, TLS)."""

    exit_code = 4


class UnknownJob(BptError):
    """Raised when a job id is not known to the Redis server."""

    exit_code = 5


class JobFailed(BptError):
    """Raised when a job ended in the failed or cancelled state."""

    exit_code = 6


class CorruptBlob(BptError):
    """Raised when bytes read from Redis or a file are not a valid weights or array blob."""

    exit_code = 7


class DidNotLearn(BptError):
    """Raised when a job finished with a test accuracy no better than chance (bpt.train.learning):
    its outputs are written, but it is not reported as a success."""

    exit_code = 8


class InvalidTask(BptError):
    """Raised when a task message names a subset, epoch or job that does not fit the job."""

    exit_code = 1


class ModelUnavailable(BptError):
    """Raised when this machine cannot build the job's model: a plug-in it lacks, another
    version of it, or parameters laid out differently from the submitter's. A worker
    declines the task (another may have it) instead of training something else."""

    exit_code = 9
