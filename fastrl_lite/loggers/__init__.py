from .core import LoggerBase, ProgressBarLogger, CSVLogger
from .plots import plot_returns

__all__ = ["LoggerBase", "ProgressBarLogger", "CSVLogger", "plot_returns"]
