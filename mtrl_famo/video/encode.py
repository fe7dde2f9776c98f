"""Frames to a video file (MP4 through imageio-ffmpeg, else GIF), written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mtrl_famo.atomic import publish
from mtrl_famo.video import VideoError

FPS = 50  # 0.625x real time (Meta-World steps are 12.5 ms); 20 ms is a delay every GIF viewer honours
FORMATS = ("auto", "mp4", "gif")


def mp4_available() -> bool:
    """Whether imageio can encode MP4 here (imageio-ffmpeg ships its own ffmpeg binary)."""
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).is_file()
    except Exception:  # not installed, or no binary for this platform
        return False


def resolve_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise VideoError(f"format={fmt!r}; allowed: {', '.join(FORMATS)}")
    if fmt == "auto":
        return "mp4" if mp4_available() else "gif"
    if fmt == "mp4" and not mp4_available():
        raise VideoError("format=mp4 but no ffmpeg encoder is available (pip install imageio-ffmpeg); "
                         "use format=gif")
    return fmt


class VideoFile:
    """Frames to ``path`` through a temporary file in the same folder, renamed into place on success."""

    def __init__(self, path: Path, fmt: str, fps: int):
        self.path, self.fmt, self.fps = path, fmt, fps
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp.{fmt}")
        os.close(fd)
        self.tmp = Path(tmp)
        self.frames = 0
        self._gif_frames: list[np.ndarray] = []
        self._writer = None
        if fmt == "mp4":
            import imageio.v2 as imageio

            self._writer = imageio.get_writer(self.tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                              quality=7, pixelformat="yuv420p", macro_block_size=8,
                                              ffmpeg_log_level="error")

    def append(self, frame: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.append_data(frame)
        else:
            self._gif_frames.append(frame)
        self.frames += 1

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
        else:
            import imageio.v3 as iio

            iio.imwrite(self.tmp, np.stack(self._gif_frames), extension=".gif", plugin="pillow",
                        duration=round(1000 / self.fps), loop=0)
        publish(self.tmp, self.path)

    def discard(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
        except Exception:  # the writer may be half-broken; the temp file goes anyway
            pass
        self.tmp.unlink(missing_ok=True)


