"""The face pipeline: detect (MediaPipe) -> quality gates -> embed (dlib) -> match (1:N).

Nothing in this package writes an image anywhere: frames live in memory only.
"""
