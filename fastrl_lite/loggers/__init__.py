from .core import LoggerBase, ProgressBarLogger, CSVLogger
from .plots import plot_returns, learning_curve_stats, plot_learning_curves
from .video import record_episode_gif, show_gif, FrameRecorder

__all__ = ["LoggerBase", "ProgressBarLogger", "CSVLogger", "plot_returns", "learning_curve_stats",
           "plot_learning_curves", "record_episode_gif", "show_gif", "FrameRecorder"]
