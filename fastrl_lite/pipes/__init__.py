from .core import Pipe, Cycler, find_pipes, find_pipe, pipe_to_device, pipe_graph

__all__ = ["Pipe", "Cycler", "find_pipes", "find_pipe", "pipe_to_device", "pipe_graph"]
