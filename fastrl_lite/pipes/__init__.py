from .core import Pipe, find_pipes, find_pipe, pipe_to_device, pipe_graph

__all__ = ["Pipe", "find_pipes", "find_pipe", "pipe_to_device", "pipe_graph"]
